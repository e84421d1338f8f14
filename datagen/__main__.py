"""``python -m datagen``: the same CLI as the ``datagen`` script (used to start ``datagen serve`` children)."""

if __name__ == "__main__":
    from datagen.cli import main

    main()
