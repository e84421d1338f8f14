"""Prompt templates: strict variables, sandboxing, untrusted text stays text."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from datagen import prompts
from datagen.cli import cli
from datagen.errors import TemplateError


@pytest.fixture
def prompt_dir(tmp_path, monkeypatch):
    root = tmp_path / "prompts"
    (root / "en").mkdir(parents=True)
    (root / "en" / "echo.j2").write_text("Echo: {{ text }}\n")
    (root / "en" / "tasks.j2").write_text("{% for t in tasks %}{{ loop.index }}. {{ t.instruction }}\n{% endfor %}")
    (root / "en" / "evil.j2").write_text("{{ ''.__class__.__mro__ }}")
    (root / "en" / "broken.j2").write_text("{% for x in %}")
    monkeypatch.setenv("DATAGEN_PROMPTS", str(root))
    return root


def test_untrusted_text_is_never_compiled(prompt_dir):
    payload = "{{ 7*7 }} {% for x in range(3) %}x{% endfor %} {{ config }}"
    assert prompts.render("en/echo", text=payload) == f"Echo: {payload}"


def test_missing_variable_fails_at_render_time(prompt_dir):
    with pytest.raises(TemplateError, match="'text' is undefined"):
        prompts.render("en/echo")


def test_sandbox_blocks_attribute_escapes(prompt_dir):
    with pytest.raises(TemplateError, match="sandbox"):
        prompts.render("en/evil")


def test_missing_and_broken_templates_are_named(prompt_dir):
    with pytest.raises(TemplateError, match="nope.j2 not found"):
        prompts.render("en/nope")
    with pytest.raises(TemplateError, match="broken.j2:1: template syntax error"):
        prompts.render("en/broken")


def test_show_renders_placeholders_and_template_ref_hashes(prompt_dir):
    assert prompts.show("en/echo") == "Echo: <<text>>"
    assert "1. <<tasks[0].instruction>>" in prompts.show("en/tasks")
    ref = prompts.template_ref("en/echo")
    (prompt_dir / "en" / "echo.j2").write_text("Echo!! {{ text }}\n")
    assert prompts.template_ref("en/echo")["sha256"] != ref["sha256"] and ref["name"] == "en/echo"


def test_cli_prompts_list_and_show(prompt_dir):
    runner = CliRunner()
    listed = runner.invoke(cli, ["prompts", "list"])
    assert listed.exit_code == 0 and "en/echo" in listed.output.split()
    shown = runner.invoke(cli, ["prompts", "show", "en/echo"])
    assert shown.exit_code == 0 and shown.output.strip() == "Echo: <<text>>"
    missing = runner.invoke(cli, ["prompts", "show", "en/none"])
    assert missing.exit_code == 2 and "not found" in missing.output


def test_every_shipped_template_renders_with_placeholders():
    for name in prompts.list_templates():
        shown = prompts.show(name)
        assert shown.strip(), name
        prompts.template_ref(name)  # parses and hashes


def test_show_falls_back_to_source_for_templates_with_logic(prompt_dir):
    (prompt_dir / "en" / "lookup.j2").write_text("{% set kinds = {'a': 'Ask'} %}{{ kinds[kind] }}: {{ text }}")
    shown = prompts.show("en/lookup")
    assert "needs real values" in shown and "variables: kind, text" in shown and "kinds[kind]" in shown
