"""Prompt templates: one sandboxed Jinja2 environment over ``prompts/<lang>/<name>.j2``.

Prompts are files, never strings in code, so they can be read, diffed and tuned without touching Python.
``StrictUndefined`` makes a missing variable fail at render time instead of silently producing a prompt
with a hole. Untrusted text (documents, generated instructions) is only ever passed *as a variable*: Jinja2
inserts a variable's value verbatim and never compiles it, so ``{{ 7*7 }}`` inside a document stays
literal. The sandbox is a second wall, in case a template is ever loaded from a user-supplied folder.

    render("en/self_qa_answer", chunk=document_text, question=question)   # document text stays data
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from datagen.errors import TemplateError

LANGS = ("en", "zh")


def prompts_dir() -> Path:
    """The template folder: ``DATAGEN_PROMPTS`` if set, else ``prompts/`` of this checkout."""
    configured = os.environ.get("DATAGEN_PROMPTS")
    return Path(configured) if configured else Path(__file__).resolve().parent.parent / "prompts"


@lru_cache(maxsize=4)
def _environment(root: str) -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(
        loader=jinja2.FileSystemLoader(root),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # prompts are plain text, not HTML
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )


def _template_file(name: str) -> str:
    return name if name.endswith(".j2") else f"{name}.j2"


def get_template(name: str) -> jinja2.Template:
    """Load ``name`` (``"en/self_instruct_generate"``), raising TemplateError with the path when missing."""
    root = prompts_dir()
    try:
        return _environment(str(root)).get_template(_template_file(name))
    except jinja2.TemplateNotFound:
        raise TemplateError(
            f"prompt template {root / _template_file(name)} not found; "
            f"available: {', '.join(list_templates()) or 'none'}"
        ) from None
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(
            f"{root / _template_file(name)}:{exc.lineno}: template syntax error: {exc.message}"
        ) from None


def render(name: str, **variables: Any) -> str:
    """Render a template with ``variables``; a missing variable is a TemplateError naming it."""
    template = get_template(name)
    try:
        return template.render(**variables).strip()
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"prompt template {name}: {exc.message}") from None
    except jinja2.exceptions.SecurityError as exc:
        raise TemplateError(f"prompt template {name}: unsafe operation blocked by the sandbox: {exc}") from None


def template_ref(name: str) -> dict[str, str]:
    """What ``meta.prompt`` stores: the template name and a hash of its text, so a change is visible."""
    path = prompts_dir() / _template_file(name)
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    except OSError:
        raise TemplateError(f"prompt template {path} not found") from None
    return {"name": name, "sha256": digest}


def list_templates() -> list[str]:
    """Every template name, as ``lang/name`` without the ``.j2`` suffix."""
    root = prompts_dir()
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.glob("*/*.j2"))


class _Placeholder:
    """Stands in for any variable when showing a template: prints as ``<<name>>``, iterates once."""

    def __init__(self, name: str):
        self.name = name

    def __str__(self) -> str:
        return f"<<{self.name}>>"

    def __iter__(self):
        yield _Placeholder(f"{self.name}[0]")

    def __len__(self) -> int:
        return 1

    def __getattr__(self, attr: str) -> _Placeholder:
        if attr.startswith("_"):
            raise AttributeError(attr)
        return _Placeholder(f"{self.name}.{attr}")

    def __getitem__(self, key: Any) -> _Placeholder:
        return _Placeholder(f"{self.name}[{key!r}]")


def show(name: str) -> str:
    """Render a template with a placeholder for each variable (``datagen prompts show NAME``)."""
    from jinja2 import meta

    template = get_template(name)  # a missing template: TemplateError naming it
    source = Path(template.filename).read_text(encoding="utf-8")
    names = meta.find_undeclared_variables(template.environment.parse(source))
    try:
        return render(name, **{n: _Placeholder(n) for n in names})
    except TemplateError as exc:
        # Templates with logic over their values (lookups, comparisons) cannot run on placeholders:
        # show the source instead, saying which variables it takes.
        return (
            f"{{# {name} needs real values to render ({exc}); variables: {', '.join(sorted(names))} #}}\n"
            + source.rstrip()
        )
