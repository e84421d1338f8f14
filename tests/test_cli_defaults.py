"""Defaults live once, in the config dataclasses (issue 22): a command-line option that sets a config field
defaults to "not given" (None), the dataclass fills it in, and ``--help`` shows the dataclass's value.

Before this, the CLI restated the defaults and they drifted: ``datagen self-qa`` answered with max_tokens 512
where the same stage in a run config used 256. A literal default re-added to such an option fails here.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from datagen.cli import ConfigOption, cli, config_class, configure
from datagen.config import field_default
from tests.plugins.faults import MODEL_ID

NOT_GIVEN = (None, (), getattr(click.core, "UNSET", None))  # click 8.3+ marks an option given no default UNSET

#: Each command whose options set config fields → those configs ("X.sampling": the fields of X's ``sampling``).
COMMANDS = {
    "serve": ("ServeConfig",),
    "respond": ("RespondConfig", "RespondConfig.sampling", "LLMConfig"),
    "self-instruct": ("SelfInstructConfig", "LLMConfig"),
    "self-instruct-multiturn": ("MultiTurnConfig", "LLMConfig"),
    "self-qa": ("SelfQAConfig", "SelfQAConfig.sampling", "LLMConfig"),
    "self-kg": ("SelfKGConfig", "SelfKGConfig.sampling", "LLMConfig"),
    "filter": ("FilterConfig", "LLMConfig"),
    "train": ("TrainConfig",),
    "eval": ("EvalConfig",),
    "classify": ("ClassifyConfig", "LLMConfig"),
}


def commands(group: click.Group = cli, prefix: str = "") -> dict[str, click.Command]:
    found = {}
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found.update(commands(command, f"{prefix}{name} "))
        else:
            found[prefix + name] = command
    return found


def config_options() -> list[tuple[str, ConfigOption]]:
    return [(name, p) for name, command in commands().items() for p in command.params if isinstance(p, ConfigOption)]


def fields_of(config: str) -> dict[str, object]:
    """The fields a config's options may set, with their defaults (a ``sampling`` config: its default's fields)."""
    name, _, nested = config.partition(".")
    if nested:
        value = field_default(config_class(name), nested)
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    return {f.name: field_default(config_class(name), f.name) for f in dataclasses.fields(config_class(name))}


def test_every_command_with_config_options_is_checked():
    assert {name for name, _ in config_options()} <= set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_an_option_named_for_a_config_field_leaves_its_default_to_the_config(name):
    """An option named like a field of the command's configs must be a ConfigOption (default: not given), unless
    it restates no default: required (``--out``), or unset where the field is unset too. Options given several
    times (``--base-url``, ``--against``) default to none given, the empty tuple."""
    command = commands()[name]
    fields = {k: v for config in COMMANDS[name] for k, v in fields_of(config).items()}
    options = [p for p in command.params if isinstance(p, click.Option) and p.name in fields]
    for param in options:
        if isinstance(param, ConfigOption) or param.required:
            continue
        if param.default in NOT_GIVEN and (param.multiple or fields[param.name] in (None, dataclasses.MISSING)):
            continue
        pytest.fail(
            f"{name} {param.opts[0]} sets a config field but is a plain option (default "
            f"{param.default!r}): make it a ConfigOption so that the config's default applies"
        )
    checked = sum(isinstance(p, ConfigOption) for p in options)
    assert checked, f"{name}: no option sets a field of {COMMANDS[name]}"


@pytest.mark.parametrize("name, param", config_options(), ids=lambda v: v if isinstance(v, str) else v.name)
def test_the_effective_default_is_the_dataclass_default(name, param):
    command = commands()[name]
    default = param.config_default()
    assert default is not dataclasses.MISSING, f"{name} {param.opts[0]}: {param.config}.{param.field} has no default"
    assert param.default is None
    with command.make_context(name, [], resilient_parsing=True) as ctx:  # nothing given
        assert ctx.params[param.name] is None  # so configure() leaves the field to the dataclass
        cls = config_class(param.config)
        required = {
            f.name: Path(__file__)
            for f in dataclasses.fields(cls)  # an existing file for every path
            if field_default(cls, f.name) is dataclasses.MISSING
        }
        cfg = configure(param.config, ctx.params, **required)
        value = cfg
        for part in param.field.split("."):
            value = getattr(value, part)
        assert value == default
        shown = (param.get_help_extra(ctx) or {}).get("default")
    if default is None or default is False and not param.secondary_opts:
        assert shown is None
    elif param.is_bool_flag:
        assert shown == (param.opts if default else param.secondary_opts)[0].lstrip("-")
    else:
        assert shown == str(default), f"{name} {param.opts[0]}: --help shows {shown!r}, the config has {default!r}"


def test_a_literal_default_is_refused():
    with pytest.raises(TypeError):
        ConfigOption(["--num"], config="SelfKGConfig", default=5)


def test_given_options_reach_the_config_nested_ones_over_the_field_default():
    command = commands()["self-kg"]
    with command.make_context("self-kg", ["--graph", __file__, "--out", "o", "--num", "7", "--max-tokens", "99"]):
        cfg = configure("SelfKGConfig", {"num": 7, "max_tokens": 99}, graph=Path(__file__), out=Path("o"))
    default = field_default(config_class("SelfKGConfig"), "sampling")
    assert cfg.num == 7 and cfg.sampling == dataclasses.replace(default, max_tokens=99)
    assert default.temperature == 0.3  # the rest of self-kg's own sampling, not the client's 0.7


def test_self_qa_on_the_command_line_answers_with_the_configs_max_tokens(fault_server, tmp_path):
    """The drift this fixes: self-qa asked for 512 answer tokens on the command line, 256 in a run config."""
    doc = tmp_path / "docs" / "volcano.md"
    doc.parent.mkdir()
    doc.write_text(
        "Magma that reaches the surface of a volcano is called lava. Lava cools into basalt rock "
        "within days, and the rock keeps the shape of the flow for centuries.\n",
        encoding="utf-8",
    )

    def responder(kind: str, body: dict) -> str:
        prompt = body["messages"][-1]["content"]
        if re.search(r"^Question:", prompt, re.MULTILINE):
            return "Lava is magma that reaches the surface of a volcano."
        return "1. What is magma called once it reaches the surface of a volcano?"

    fault_server.responder = responder
    result = CliRunner().invoke(
        cli,
        [
            "self-qa",
            "--docs",
            str(doc.parent),
            "--out",
            str(tmp_path / "out"),
            "--base-url",
            fault_server.url,
            "--model",
            MODEL_ID,
            "--no-cache",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    answers = [
        e["body"]
        for e in fault_server.log
        if re.search(r"^Question:", e["body"]["messages"][-1]["content"], re.MULTILINE)
    ]
    assert answers and {body["max_tokens"] for body in answers} == {256}
    assert field_default(config_class("SelfQAConfig"), "sampling.max_tokens") == 256
