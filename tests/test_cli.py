"""The command line: help lists every command, every command has an example, exit codes, logging flags."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from datagen.cli import cli


def commands(group=cli, prefix=()):
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from commands(command, prefix + (name,))
        else:
            yield prefix + (name,)


def test_top_help_lists_every_command_with_a_one_line_summary():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in cli.commands:
        line = next(l for l in result.output.splitlines() if l.strip().startswith(name + " "))
        assert not line.rstrip().endswith("..."), f"summary of {name} is cut: {line!r}"


@pytest.mark.parametrize("path", list(commands()), ids=lambda p: " ".join(p))
def test_every_command_has_help_with_an_example(path):
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0 and "Example:" in result.output, result.output


def test_unknown_command_and_bad_flag_exit_2():
    runner = CliRunner()
    assert runner.invoke(cli, ["frobnicate"]).exit_code == 2
    assert runner.invoke(cli, ["convert", "--to"]).exit_code == 2


def test_help_is_fast_and_imports_no_torch():
    code = (
        "import sys, datagen.cli; datagen.cli.cli.main(['--help'], standalone_mode=False); "
        "print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip().endswith("False")


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and "datagen, version" in result.output


def test_quiet_and_verbose_flags_set_log_level(tmp_path):
    import logging

    runner = CliRunner()
    runner.invoke(cli, ["-q", "prompts", "list"])
    assert logging.getLogger("datagen").level == logging.WARNING
    runner.invoke(cli, ["-v", "prompts", "list"])
    assert logging.getLogger("datagen").level == logging.DEBUG


def test_unexpected_errors_give_one_line_and_exit_1(tmp_path):
    code = "import datagen.cli as c\n@c.cli.command('boom')\ndef boom():\n    raise RuntimeError('kaboom')\nc.main()\n"
    result = subprocess.run([sys.executable, "-c", code, "boom"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "internal error: RuntimeError: kaboom" in result.stderr
    assert "Traceback" not in result.stderr
