"""Building frozen config dataclasses from YAML and ``key=value`` overrides, with errors that say what to fix.

Precedence: dataclass default < YAML < command-line ``key=value``. An unknown key is an error that names it,
lists the allowed keys and suggests the nearest one ("did you mean 'num_instructions'?"); a value of the
wrong type names the key, the expected type and what was given.

    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Demo:
    ...     size: int = 3
    >>> build(Demo, {"size": 5}, "demo")
    Demo(size=5)
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from datagen.errors import ConfigError
from datagen.redaction import is_secret_name, redact_text

#: A YAML file whose aliases expand past this many nodes is refused (a "billion laughs" config): a real config
#: has a few hundred, and everything downstream (overrides, manifests, fingerprints) walks the expanded tree.
MAX_YAML_NODES = 100_000


def suggest(word: str, allowed: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest allowed word, or an empty string."""
    close = difflib.get_close_matches(word, list(allowed), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; syntax errors name the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from None
    try:
        data = _safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(exc, 'problem', None) or exc}") from None
    except _TooBig as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid YAML: nested too deeply") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a mapping of keys to values, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML: ``3``, ``true``, ``[a, b]``) to a nested dict."""
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. self_instruct.num_instructions=10)")
        dotted, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = data
        parts = dotted.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {dotted}: '{part}' is not a section")
            node = child
        node[parts[-1]] = value
    return data


def check_fields(config: Any, prefix: str, checks: Iterable[tuple[str, bool, str]]) -> None:
    """The one way configs check their values: ``(field, ok, what it must be)`` rows; the first that fails is a
    ConfigError naming the key, what it must be and what it got ("train.lora_r must be an integer >= 1, got 0")."""
    for name, ok, expected in checks:
        if not ok:
            raise ConfigError(f"{prefix}{name} must be {expected}, got {getattr(config, name)!r}")


def field_default(cls: type, dotted: str) -> Any:
    """The default of field ``dotted`` of dataclass ``cls`` (``a.b``: field ``b`` of field ``a``'s default), the one
    place the command line reads its defaults from; ``dataclasses.MISSING`` for a field with none.

    >>> from datagen.llm.types import LLMConfig
    >>> field_default(LLMConfig, "concurrency")
    16
    """
    head, _, rest = dotted.partition(".")
    found = {f.name: f for f in dataclasses.fields(cls)}[head]
    value = found.default if found.default_factory is dataclasses.MISSING else found.default_factory()
    for name in rest.split(".") if rest else ():
        value = getattr(value, name)
    return value


def check_keys(mapping: dict[str, Any], allowed: Iterable[str], where: str) -> None:
    """Raise ConfigError for the first key of ``mapping`` not in ``allowed``."""
    allowed = list(allowed)
    for key in mapping:
        if key not in allowed:
            raise ConfigError(
                f"{where}: unknown key '{key}'{suggest(str(key), allowed)}; allowed: {', '.join(sorted(allowed))}"
            )


def build(cls: type, mapping: dict[str, Any] | None, where: str, exclude: Iterable[str] = (), **fixed: Any) -> Any:
    """Instantiate dataclass ``cls`` from ``mapping`` after checking every key and value type.

    ``fixed`` fields (paths the runner decides, the endpoint) are set by the caller and may not come from
    the mapping; ``exclude`` names fields the mapping may not set either.
    """
    if mapping is not None and not isinstance(mapping, dict):
        raise ConfigError(f"{where}: must be a mapping of keys to values, got {_describe(mapping)}")
    mapping = dict(mapping or {})
    allowed = [f.name for f in dataclasses.fields(cls) if f.name not in {*exclude, *fixed}]
    check_keys(mapping, allowed, where)
    hints = typing.get_type_hints(cls)
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    values = {}
    for key, value in mapping.items():
        default = defaults.get(key)
        if isinstance(value, dict) and dataclasses.is_dataclass(default) and not isinstance(default, type):
            values[key] = _merge(default, value, f"{where}.{key}")
        else:
            values[key] = coerce(value, hints[key], f"{where}.{key}")
    try:
        return cls(**values, **fixed)
    except (ConfigError, TypeError) as exc:
        # the dataclass names its own key (e.g. "self_instruct.lang"); say which file section it came from
        raise ConfigError(f"{where}: {exc}") from None


def _merge(default: Any, mapping: dict[str, Any], where: str) -> Any:
    """A partial nested section updates the field's own default (e.g. one sampling knob), not the class defaults."""
    cls = type(default)
    check_keys(mapping, [f.name for f in dataclasses.fields(cls)], where)
    hints = typing.get_type_hints(cls)
    try:
        return dataclasses.replace(default, **{k: coerce(v, hints[k], f"{where}.{k}") for k, v in mapping.items()})
    except (ConfigError, TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


#: Types ``coerce`` takes only as they are, with what the error says was expected.
_PLAIN = {bool: "true or false", int: "an integer", str: "a string"}


def coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against a type hint, converting the harmless cases (int → float, str → Path, list → tuple)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce(value, option, where)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0] if len(errors) == 1 else ConfigError(f"{where}: expected {_name(hint)}, got {value!r}")
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        items = [coerce(v, args[0], f"{where}[{i}]") if args else v for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return value
    if hint is Any:
        return value
    if hint in _PLAIN:
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):  # True is an int to Python
            raise ConfigError(f"{where}: expected {_PLAIN[hint]}, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # PyYAML reads 2e-4 (no dot) as a string: YAML 1.1's float needs one
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if hint is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{where}: expected a path, got {value!r}")
        return Path(value)
    if dataclasses.is_dataclass(hint):
        return value if isinstance(value, hint) else build(hint, value, where)
    if isinstance(hint, type) and isinstance(value, hint):
        return value
    if typing.get_origin(hint) is typing.Literal:
        if value not in typing.get_args(hint):
            raise ConfigError(f"{where}: must be one of {list(typing.get_args(hint))}, got {value!r}")
        return value
    raise ConfigError(f"{where}: expected {_name(hint)}, got {value!r}")


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def redact(data: Any) -> Any:
    """A copy with values of secret-looking keys replaced and URL credentials scrubbed from every string, for
    manifests and stats (keys never enter configs anyway; a base URL may still carry ``user:key@``)."""
    if isinstance(data, dict):
        return {k: ("***" if is_secret_name(k) and v else redact(v)) for k, v in data.items()}
    if isinstance(data, str):
        return redact_text(data)
    if isinstance(data, (list, tuple)):
        return [redact(v) for v in data]
    return to_plain(data)


def to_plain(obj: Any) -> Any:
    """A dataclass (or nested structure) as JSON-ready plain data."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


# ---------------------------------------------------------------------------------------------- strict YAML


class _TooBig(Exception):
    """A YAML document whose aliases expand past ``MAX_YAML_NODES`` nodes, or refer to themselves."""


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a key given twice in one mapping is an error instead of silently last-wins."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue  # ``<<: *defaults`` may be overridden by the keys beside it: that is its purpose
                key = self.construct_object(key_node, deep=False)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first given on line {seen[key] + 1})", key_node.start_mark
                    )
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


# Our own copies of PyYAML's implicit resolvers and safe constructors, taken at import: a library that edits
# ``yaml.SafeLoader`` in place (seen in the test suite: dates read back as text once some library had loaded)
# must not change what a config means. A date where text belongs stays a date, and ``check_plain`` refuses it.
_StrictLoader.yaml_implicit_resolvers = {
    first: list(entries) for first, entries in yaml.resolver.Resolver.yaml_implicit_resolvers.items()
}
_StrictLoader.yaml_constructors = dict(yaml.constructor.SafeConstructor.yaml_constructors)


def _safe_load(text: str) -> Any:
    """``yaml.safe_load`` with duplicate keys refused and the expanded size of aliases bounded."""
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_expansion(root: yaml.Node, limit: int = MAX_YAML_NODES) -> None:
    """Count the nodes ``root`` expands to, aliases followed (each shared node counted once per use, from a
    memo: linear in the size of the file), without recursion; raise ``_TooBig`` past ``limit`` or on a cycle."""

    def children(node: yaml.Node) -> list[yaml.Node]:
        if isinstance(node, yaml.MappingNode):
            return [part for pair in node.value for part in pair]
        return list(node.value) if isinstance(node, yaml.SequenceNode) else []

    sizes: dict[int, int] = {}
    visiting = {id(root)}
    stack = [(root, iter(children(root)))]
    while stack:
        node, pending = stack[-1]
        child = next(pending, None)
        if child is None:
            stack.pop()
            visiting.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(c)] for c in children(node))
            if sizes[id(node)] > limit:
                raise _TooBig(
                    f"aliases expand to more than {limit:,} values (line {node.start_mark.line + 1}); "
                    "a config this size is almost certainly a YAML alias bomb"
                )
            continue
        if id(child) in sizes:
            continue
        if id(child) in visiting:
            raise _TooBig(f"line {child.start_mark.line + 1}: an alias refers to a value that contains it")
        visiting.add(id(child))
        stack.append((child, iter(children(child))))


def check_plain(data: Any, where: str) -> None:
    """Refuse config values JSON cannot hold, before anything runs: ``inf``/``nan`` (a run would pay for its
    requests and then fail writing its manifest, and every ``--resume`` the same) and YAML-only types (dates,
    sets, binary), naming the dotted key."""
    stack: list[tuple[str, Any]] = [(where, data)]
    while stack:
        key, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        if isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(k, (str, int)) or isinstance(k, bool):
                    raise ConfigError(f"{key}: keys must be text, got {k!r}")
                stack.append((f"{key}.{k}" if key != where else f"{where}: {k}", v))
        elif isinstance(value, (list, tuple)):
            stack.extend((f"{key}[{i}]", v) for i, v in enumerate(value))
        elif value is not None and not isinstance(value, (str, int, float, bool)):
            raise ConfigError(
                f"{key}: expected text, a number, true/false, a list or a mapping, got "
                f"{type(value).__name__} {value!r} (quote it to pass it as text)"
            )


def _describe(value: Any) -> str:
    kind = {list: "a list", str: "text", bool: "true/false", int: "a number", float: "a number"}.get(type(value))
    return f"{kind} ({value!r:.60})" if kind else repr(value)[:60]
