"""Load a knowledge graph into a networkx ``MultiDiGraph``, the input of the Self-KG generator.

Run it through the generator:  datagen self-kg --graph seeds/kg/plants.tsv --num 20 --out gen/kg/

Formats (by extension, else sniffed from the first bytes; ``fmt=`` forces one):

- ``.tsv`` / ``.csv`` / ``.txt``: one triple per row, ``head, relation, tail``. A header row is detected
  when it names the columns (``head/relation/tail``, ``subject/predicate/object``, ``h/r/t``, ``s/p/o``,
  ``source/relation/target``) and may then order them freely; ``#`` lines and blank lines are skipped.
- ``.jsonl``: ``{"head", "relation", "tail"}`` per line (also ``subject/predicate/object``, ``h/r/t``).
- ``.graphml``, ``.gml``, node-link ``.json`` (what ``networkx.node_link_data`` writes, ``links`` or
  ``edges``): the edge's relation is its ``relation`` (or ``predicate``, ``rel``, ``label``, ``type``)
  attribute, else a non-numeric edge ``key``/``id``. Node attributes become facts too (attribute name =
  relation, value = tail, a node marked ``literal=True`` unless an entity already has that id);
  ``label``/``name`` attributes are display labels instead (``label_zh`` or ``label@zh`` for one language).
  In GML, like networkx, a node is known by its ``label`` when every node has a distinct one.
- RDF: ``.nt`` (N-Triples, streamed), ``.ttl`` (Turtle), ``.rdf``/``.owl`` (RDF/XML), ``.jsonld`` (JSON-LD with
  an inline context): IRIs are the ids, ``rdfs:label``/``skos:prefLabel`` in ``@en``/``@zh`` the labels, and
  literal-valued predicates attribute facts (``datagen/generate/rdf.py``).

The graph: nodes are entity ids (strings, kept intact), each edge is one fact ``head -[relation]-> tail``
whose key is the relation id, so a duplicate triple is the same edge and is merged (counted). Self-loops are
dropped (counted) unless ``keep_self_loops``. An edge that names a node its file never declares (GraphML,
GML, node-link) is a dangling reference: ``dangling="drop"`` (default) drops the fact, ``"add"`` keeps it
and creates the node, ``"error"`` stops with ``file:line``. A bad row (wrong column count, an empty field,
an edge without a relation) is a ``RecordError`` naming ``file:line``, raised before anything is written;
``skip_bad_rows=True`` skips and counts it instead. Invalid JSON/XML syntax is always an error.

Display labels: ``G.graph["labels"][lang][id]`` (``"*"`` = any language), filled from label attributes and
an optional labels file (``id<TAB>label``, or a header ``id  label_en  label_zh``; a two-column file named
``*.zh.tsv`` labels Chinese). Without a label, an id is normalised for display only:
``disease_or_syndrome`` → ``disease or syndrome``, relation ``hasSymptom`` → ``has symptom``.
Load counts are in ``G.graph["stats"]``.

    >>> G = load_graph("seeds/kg/plants.tsv", labels="seeds/kg/labels.zh.tsv")   # doctest: +SKIP
    >>> entity_label(G, "Rosa_canina", "en"), relation_label(G, "has_part", "en")  # doctest: +SKIP
    ('Rosa canina', 'has part')
"""

from __future__ import annotations

import contextlib
import csv
import html
import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import networkx as nx

from datagen.errors import ConfigError, RecordError
from datagen.records import iter_json_lines

FORMATS = ("tsv", "csv", "jsonl", "graphml", "gml", "node-link", "nt", "turtle", "rdfxml", "jsonld")
_RDF = ("nt", "turtle", "rdfxml", "jsonld")
DANGLING = ("drop", "add", "error")
ANY_LANG = "*"

_EXTENSIONS = {
    ".tsv": "tsv",
    ".tab": "tsv",
    ".csv": "csv",
    ".txt": "table",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".graphml": "graphml",
    ".xml": "graphml",
    ".gml": "gml",
    ".json": "json",
    ".nt": "nt",
    ".ttl": "turtle",
    ".turtle": "turtle",
    ".rdf": "rdfxml",
    ".owl": "rdfxml",
    ".jsonld": "jsonld",
}
# Column names a header row may use, per field.
_HEADER_NAMES = {
    "head": {"head", "subject", "h", "s", "source", "from", "head_id", "subject_id"},
    "relation": {"relation", "predicate", "r", "p", "rel", "relation_type", "property", "edge"},
    "tail": {"tail", "object", "t", "o", "target", "to", "tail_id", "object_id", "value"},
}
_JSON_NAMINGS = (("head", "relation", "tail"), ("subject", "predicate", "object"), ("h", "r", "t"), ("s", "p", "o"))
_RELATION_ATTRS = ("relation", "predicate", "rel", "label", "type")
_LABEL_ATTR = re.compile(r"(?:label|name)(?:[_@:.\-]([a-z]{2})(?:[_\-][a-z]+)?)?", re.I)
_MAX_EXAMPLES = 5  # bad rows quoted in stats when they are skipped


# ---------------------------------------------------------------------------------------------- labels


def normalise_label(raw: str, relation: bool = False) -> str:
    """A display form of an id: URI/CURIE prefix dropped, ``_`` → space; relations also split camelCase.

    >>> normalise_label("disease_or_syndrome"), normalise_label("http://x.org/ont#hasSymptom", relation=True)
    ('disease or syndrome', 'has symptom')
    """
    text = raw.strip()
    if "://" in text:
        text = re.split(r"[/#]", text.rstrip("/#"))[-1] or text
    elif re.fullmatch(r"[A-Za-z][\w\-]*:[^\s:/\d]+", text):
        text = text.split(":", 1)[1]  # a CURIE such as ex:treats; a code such as MESH:D003924 is kept whole
    text = text.replace("_", " ")
    if relation:
        text = re.sub(r"(?<=[a-z0-9])(?=[A-Z][a-z])", " ", text)
        text = " ".join(w.lower() if w[:1].isupper() and w[1:].islower() else w for w in text.split())
    return " ".join(text.split()) or raw


def entity_label(G: nx.MultiDiGraph, entity: str, lang: str) -> str:
    """The display label of an entity in ``lang``: labels file / label attribute, else the normalised id."""
    labels = G.graph.get("labels", {})
    return labels.get(lang, {}).get(entity) or labels.get(ANY_LANG, {}).get(entity) or normalise_label(entity)


def relation_label(G: nx.MultiDiGraph, relation: str, lang: str) -> str:
    """The display label of a relation id in ``lang`` (``has_symptom`` → ``has symptom`` when unlabelled)."""
    labels = G.graph.get("labels", {})
    return (
        labels.get(lang, {}).get(relation)
        or labels.get(ANY_LANG, {}).get(relation)
        or normalise_label(relation, relation=True)
    )


def all_labels(G: nx.MultiDiGraph, node: str, relation: bool = False) -> set[str]:
    """Every name a node (or a relation id) goes by: its labels in every language and its normalised id."""
    names = {normalise_label(node, relation=relation)}
    for table in G.graph.get("labels", {}).values():
        if node in table:
            names.add(table[node])
    return names


def _clean(text: str) -> str:
    return " ".join(text.split())


@contextlib.contextmanager
def _utf8(path: Path, hint: str = "") -> Iterator[None]:
    """Reading ``path`` inside the block: bytes that are not UTF-8 are a RecordError naming it
    (``hint``: what to do)."""
    try:
        yield
    except UnicodeDecodeError as exc:
        raise RecordError(f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start}){hint}") from None


# ---------------------------------------------------------------------------------------------- building


class _Builder:
    """Adds facts to the graph and counts everything it drops, merges or skips."""

    def __init__(self, path: Path, skip_bad_rows: bool, keep_self_loops: bool, dangling: str):
        self.path = path
        self.G = nx.MultiDiGraph()
        self.G.graph["labels"] = {}
        self.skip_bad_rows = skip_bad_rows
        self.keep_self_loops = keep_self_loops
        self.dangling = dangling
        self.counts: Counter[str] = Counter()
        self.bad_examples: list[str] = []

    def bad_row(self, where: str, message: str) -> None:
        if not self.skip_bad_rows:
            raise RecordError(f"{where}: {message} (fix the row, or pass --skip-bad-rows to skip bad rows)")
        self.counts["bad_rows_skipped"] += 1
        if len(self.bad_examples) < _MAX_EXAMPLES:
            self.bad_examples.append(f"{where}: {message}")

    def add_fact(self, head: str, relation: str, tail: str, literal: bool = False) -> None:
        """Add one checked, cleaned triple (callers have already reported empty fields)."""
        self.counts["facts_read"] += 1
        if head == tail:
            if not self.keep_self_loops:
                self.counts["self_loops_dropped"] += 1
                return
            self.counts["self_loops_kept"] += 1
        if self.G.has_edge(head, tail, key=relation):
            self.counts["duplicates_merged"] += 1
            return
        if literal and tail not in self.G:
            self.G.add_node(tail, literal=True)
        self.G.add_edge(head, tail, key=relation)

    def add_label(self, lang: str, node: str, label: str) -> None:
        label = _clean(label)
        if label:
            self.G.graph["labels"].setdefault(lang, {})[node] = label

    def stats(self, fmt: str) -> dict[str, Any]:
        G = self.G
        literals = sum(1 for _, d in G.nodes(data=True) if d.get("literal"))
        relations = {r for _, _, r in G.edges(keys=True)}
        out: dict[str, Any] = {
            "path": str(self.path),
            "format": fmt,
            "triples": G.number_of_edges(),
            "entities": G.number_of_nodes() - literals,
            "literals": literals,
            "relations": len(relations),
            "facts_read": self.counts["facts_read"],
            "attribute_facts": self.counts["attribute_facts"],
            "self_loops_dropped": self.counts["self_loops_dropped"],
            "self_loops_kept": self.counts["self_loops_kept"],
            "duplicates_merged": self.counts["duplicates_merged"],
            "duplicate_nodes": self.counts["duplicate_nodes"],
            "dangling_refs": self.counts["dangling_refs"],
            "dangling_policy": self.dangling,
            "attributes_skipped": self.counts["attributes_skipped"],
            "bad_rows_skipped": self.counts["bad_rows_skipped"],
        }
        if self.bad_examples:
            out["bad_row_examples"] = self.bad_examples
        return out


def _text_value(value: Any) -> str | None:
    """A fact's tail from an attribute value: strings and numbers only (a dict has no single tail)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return _clean(str(value))
    return None


def _add_declared(
    b: _Builder,
    nodes: list[tuple[str, dict[str, Any], str]],
    edges: list[tuple[str, str, dict[str, Any], str]],
    edge_key: str = "key",
) -> None:
    """Shared by GraphML, GML and node-link: declared nodes (labels, attribute facts), then edges."""
    declared: dict[str, tuple[dict[str, Any], str]] = {}
    for node, attrs, where in nodes:
        if node in declared:
            b.counts["duplicate_nodes"] += 1  # attributes of a repeated declaration are merged
            declared[node][0].update(attrs)
        else:
            declared[node] = (dict(attrs), where)
        b.G.add_node(node)
    for source, target, attrs, where in edges:
        relation = _relation_of(attrs, edge_key)
        if relation is None:
            b.bad_row(
                where,
                f"edge {source!r} -> {target!r} has no relation; give it one of the attributes "
                f"{', '.join(_RELATION_ATTRS)}",
            )
            continue
        missing = [n for n in (source, target) if n not in declared]
        if missing:
            b.counts["dangling_refs"] += 1
            if b.dangling == "error":
                raise RecordError(
                    f"{where}: edge {source!r} -> {target!r} refers to undeclared node "
                    f"{missing[0]!r}; declare it, or pass --dangling drop/add"
                )
            if b.dangling == "drop":
                continue
        b.add_fact(source, relation, target)
    for node, (attrs, _where) in declared.items():
        for key, value in attrs.items():
            match = _LABEL_ATTR.fullmatch(key)
            if match:
                text = _text_value(value)
                if text:
                    b.add_label((match.group(1) or ANY_LANG).lower(), node, text)
                continue
            for item in value if isinstance(value, list) else [value]:
                tail = _text_value(item)
                if not tail:
                    b.counts["attributes_skipped"] += 1
                    continue
                b.counts["attribute_facts"] += 1
                b.add_fact(node, key, tail, literal=True)


def _relation_of(attrs: dict[str, Any], edge_key: str) -> str | None:
    for name in _RELATION_ATTRS:
        value = attrs.get(name)
        if isinstance(value, str) and value.strip():
            return _clean(value)
    key = attrs.get(edge_key)
    if isinstance(key, str) and key.strip() and not key.strip().isdigit():
        return _clean(key)
    return None


# ---------------------------------------------------------------------------------------------- readers


def _read_table(b: _Builder, path: Path, delimiter: str | None) -> None:
    """Triples in TSV/CSV; ``delimiter=None`` picks tab when the first data line has one, else comma."""
    with _utf8(path, "; re-save the file as UTF-8"), path.open(encoding="utf-8-sig", newline="") as handle:
        if delimiter is None:
            first = next((line for line in handle if line.strip() and not line.startswith("#")), "")
            delimiter = "\t" if "\t" in first else ","
            handle.seek(0)
        columns: dict[str, int] | None = None
        width = 3
        for number, cells in _rows(handle, path, delimiter):
            where = f"{path}:{number}"
            if columns is None:
                columns = _header(cells, where)
                if columns:
                    width = len(cells)
                    continue
                columns = {"head": 0, "relation": 1, "tail": 2}
            if len(cells) != width:
                b.bad_row(where, f"expected {width} columns (head, relation, tail), got {len(cells)}")
                continue
            _add_row(b, where, {name: cells[i] for name, i in columns.items()})


def _rows(handle: Any, path: Path, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """Non-blank, non-comment rows of a TSV (unquoted) or CSV file with the line each starts on."""
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(handle, delimiter=delimiter, quoting=quoting)
    line = 1
    try:
        for cells in reader:
            start, line = line, reader.line_num + 1
            if not cells or all(not c.strip() for c in cells) or cells[0].lstrip().startswith("#"):
                continue
            yield start, cells
    except csv.Error as exc:
        raise RecordError(f"{path}:{reader.line_num}: unreadable row: {exc}") from None


def _header(cells: list[str], where: str) -> dict[str, int] | None:
    """Column indexes when ``cells`` is a header row (two or more known names), else None."""
    names = [c.strip().lower() for c in cells]
    found = {field: i for i, name in enumerate(names) for field, aliases in _HEADER_NAMES.items() if name in aliases}
    if len(found) < 2:
        return None
    if len(found) < 3:
        raise RecordError(
            f"{where}: header {cells} does not name all of head, relation and tail (or subject, predicate, object)"
        )
    return found


def _add_row(b: _Builder, where: str, fields: dict[str, Any]) -> None:
    clean = {}
    for name in ("head", "relation", "tail"):
        value = fields.get(name)
        text = None if value is None else _text_value(value)
        if not text:
            problem = (
                f"missing {name}"
                if value is None
                else f"{name} must be a string or number"
                if text is None
                else f"empty {name}"
            )
            b.bad_row(where, problem)
            return
        clean[name] = text
    b.add_fact(clean["head"], clean["relation"], clean["tail"])


def _read_jsonl(b: _Builder, path: Path) -> None:
    for number, obj in iter_json_lines(path):
        where = f"{path}:{number}"
        if not isinstance(obj, dict):
            b.bad_row(where, "expected an object with head, relation and tail")
            continue
        naming = next((n for n in _JSON_NAMINGS if any(k in obj for k in n)), None)
        if naming is None:
            b.bad_row(where, "expected keys head/relation/tail (or subject/predicate/object)")
            continue
        _add_row(b, where, {field: obj.get(key) for field, key in zip(("head", "relation", "tail"), naming)})


def _read_graphml(b: _Builder, path: Path) -> None:
    """GraphML via expat, so every node and edge knows its line (networkx's reader would hide dangling edges)."""
    import xml.parsers.expat

    keys: dict[str, dict[str, Any]] = {}
    nodes: list[tuple[str, dict[str, Any], str]] = []
    edges: list[tuple[str, str, dict[str, Any], str]] = []
    stack: list[dict[str, Any]] = []  # open <node>/<edge>/<key> elements
    text: list[str] | None = None
    data_key: str | None = None
    parser = xml.parsers.expat.ParserCreate()

    def start(name: str, attrs: dict[str, str]) -> None:
        nonlocal text, data_key
        local = name.rsplit(":", 1)[-1]
        where = f"{path}:{parser.CurrentLineNumber}"
        if local == "key":
            kid = attrs.get("id", "")
            keys[kid] = {"name": attrs.get("attr.name") or kid, "for": attrs.get("for", "all"), "default": None}
            stack.append({"kind": "key", "id": kid})
        elif local == "default" and stack and stack[-1]["kind"] == "key":
            text, data_key = [], None
        elif local in ("node", "edge"):
            stack.append({"kind": local, "attrs": dict(attrs), "data": {}, "where": where})
        elif local == "data":
            text, data_key = [], attrs.get("key", "")

    def end(name: str) -> None:
        nonlocal text, data_key
        local = name.rsplit(":", 1)[-1]
        if local == "default" and stack and stack[-1]["kind"] == "key" and text is not None:
            keys[stack[-1]["id"]]["default"] = "".join(text).strip()
            text = None
        elif local == "data" and text is not None:
            if stack and stack[-1]["kind"] in ("node", "edge"):
                stack[-1]["data"][data_key] = "".join(text).strip()
            text = None
        elif local in ("key", "node", "edge") and stack:
            item = stack.pop()
            if item["kind"] != "key":
                _graphml_item(b, item, keys, nodes, edges)

    def chars(data: str) -> None:
        if text is not None:
            text.append(data)

    parser.StartElementHandler, parser.EndElementHandler, parser.CharacterDataHandler = start, end, chars
    try:
        with path.open("rb") as handle:
            parser.ParseFile(handle)
    except xml.parsers.expat.ExpatError as exc:
        raise RecordError(
            f"{path}:{exc.lineno}: invalid GraphML (XML error: {xml.parsers.expat.ErrorString(exc.code)})"
        ) from None
    _add_declared(b, nodes, edges, edge_key="id")


def _graphml_item(
    b: _Builder, item: dict[str, Any], keys: dict[str, dict[str, Any]], nodes: list, edges: list
) -> None:
    kind, attrs, where = item["kind"], item["attrs"], item["where"]
    values: dict[str, Any] = {
        k["name"]: k["default"] for k in keys.values() if k["for"] in (kind, "all") and k["default"] not in (None, "")
    }
    for kid, value in item["data"].items():
        values[keys[kid]["name"] if kid in keys else kid] = value
    if kind == "node":
        node = _clean(attrs.get("id", ""))
        if not node:
            b.bad_row(where, "<node> without an id")
            return
        nodes.append((node, values, where))
        return
    source, target = _clean(attrs.get("source", "")), _clean(attrs.get("target", ""))
    if not source or not target:
        b.bad_row(where, "<edge> needs both source and target")
        return
    if attrs.get("id"):
        values.setdefault("id", attrs["id"])
    edges.append((source, target, values, where))


_GML_TOKEN = re.compile(
    r"(?P<space>\s+)|(?P<comment>#[^\n]*)|(?P<key>[A-Za-z_][A-Za-z0-9_]*)"
    r'|(?P<number>[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)|(?P<string>"[^"]*")'
    r"|(?P<open>\[)|(?P<close>\])"
)


def _parse_gml(path: Path, source: str) -> list[tuple[str, Any, int]]:
    """GML as nested lists of ``(key, value, line)``; values are str, int, float or such lists."""
    stack: list[list[tuple[str, Any, int]]] = [[]]
    pending: tuple[str, int] | None = None
    position, line = 0, 1
    while position < len(source):
        match = _GML_TOKEN.match(source, position)
        if match is None:
            raise RecordError(f"{path}:{line}: invalid GML near {source[position : position + 20]!r}")
        kind, token = match.lastgroup, match.group()
        token_line = line
        line += token.count("\n")
        position = match.end()
        if kind in ("space", "comment"):
            continue
        if pending is None:
            if kind == "key":
                pending = (token, token_line)
                continue
            if kind == "close" and len(stack) > 1:
                done = stack.pop()
                key, value_line = stack[-1][-1][0], stack[-1][-1][2]
                stack[-1][-1] = (key, done, value_line)
                continue
            raise RecordError(f"{path}:{token_line}: invalid GML: expected a key, got {token!r}")
        key, key_line = pending
        pending = None
        if kind == "open":
            stack[-1].append((key, None, key_line))
            stack.append([])
        elif kind == "number":
            stack[-1].append((key, float(token) if any(c in token for c in ".eE") else int(token), key_line))
        elif kind == "string":
            stack[-1].append((key, html.unescape(token[1:-1]), key_line))
        else:
            raise RecordError(f"{path}:{token_line}: invalid GML: expected a value for {key!r}, got {token!r}")
    if pending is not None or len(stack) != 1:
        raise RecordError(f"{path}:{line}: invalid GML: unexpected end of file (unclosed '[')")
    return stack[0]


def _read_gml(b: _Builder, path: Path) -> None:
    with _utf8(path):
        source = path.read_text(encoding="utf-8-sig")
    top = _parse_gml(path, source)
    graph = next((value for key, value, _ in top if key == "graph" and isinstance(value, list)), None)
    if graph is None:
        raise RecordError(f"{path}:1: invalid GML: no 'graph [ ... ]' block")
    raw_nodes, raw_edges = [], []
    for key, value, line in graph:
        if key in ("node", "edge") and isinstance(value, list):
            attrs: dict[str, Any] = {}
            for k, v, _ in value:
                if k in attrs:  # a repeated key becomes a list, i.e. several facts
                    attrs[k] = attrs[k] + [v] if isinstance(attrs[k], list) else [attrs[k], v]
                else:
                    attrs[k] = v
            (raw_nodes if key == "node" else raw_edges).append((attrs, f"{path}:{line}"))
    # networkx's convention: nodes are known by their labels when every node has a distinct one.
    labels = [a.get("label") for a, _ in raw_nodes]
    by_label = all(isinstance(x, (str, int)) and str(x).strip() for x in labels) and len(set(map(str, labels))) == len(
        labels
    )
    nodes, names = [], {}
    for attrs, where in raw_nodes:
        if "id" not in attrs or isinstance(attrs["id"], list):
            b.bad_row(where, "node without a single 'id'")
            continue
        name = _clean(str(attrs["label"] if by_label else attrs["id"]))
        names[str(attrs["id"])] = name
        rest = {k: v for k, v in attrs.items() if k != "id" and not (by_label and k == "label")}
        nodes.append((name, rest, where))
    edges = []
    for attrs, where in raw_edges:
        if "source" not in attrs or "target" not in attrs:
            b.bad_row(where, "edge needs both source and target")
            continue
        source, target = (names.get(str(attrs[k]), str(attrs[k])) for k in ("source", "target"))
        edges.append((source, target, {k: v for k, v in attrs.items() if k not in ("source", "target")}, where))
    _add_declared(b, nodes, edges)


def _read_node_link(b: _Builder, path: Path) -> None:
    with _utf8(path):
        text = path.read_text(encoding="utf-8-sig")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg} at column {exc.colno}") from None
    links_key = "links" if isinstance(data, dict) and "links" in data else "edges"
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("nodes"), list)
        or not isinstance(data.get(links_key), list)
    ):
        raise RecordError(f"{path}: expected node-link JSON: an object with 'nodes' and 'links' (or 'edges') lists")
    nodes, edges = [], []
    for i, obj in enumerate(data["nodes"]):
        where = f"{path}: nodes[{i}]"
        node = _text_value(obj.get("id")) if isinstance(obj, dict) else None
        if not node:
            b.bad_row(where, "node without an 'id'")
            continue
        nodes.append((node, {k: v for k, v in obj.items() if k != "id"}, where))
    for i, obj in enumerate(data[links_key]):
        where = f"{path}: {links_key}[{i}]"
        source, target = (_text_value(obj.get(k)) if isinstance(obj, dict) else None for k in ("source", "target"))
        if not source or not target:
            b.bad_row(where, "link needs both 'source' and 'target'")
            continue
        edges.append((source, target, {k: v for k, v in obj.items() if k not in ("source", "target")}, where))
    _add_declared(b, nodes, edges)


def _read_rdf(b: _Builder, path: Path, fmt: str) -> None:
    from datagen.generate.rdf import read_rdf

    for kind, subject, predicate, obj in read_rdf(path, fmt):
        if kind == "fact":
            b.add_fact(subject, predicate, obj)
        elif kind == "attribute":
            b.counts["attribute_facts"] += 1
            b.add_fact(subject, predicate, obj, literal=True)
        elif kind == "skipped":
            b.counts["attributes_skipped"] += 1
        else:
            b.add_label(kind.split(":", 1)[1], subject, obj)


def _detect_format(path: Path) -> str:
    kind = _EXTENSIONS.get(path.suffix.lower())
    if kind not in (None, "json") and path.suffix.lower() != ".xml":  # .xml: GraphML or RDF/XML, sniffed
        return kind
    with path.open("rb") as handle:
        head = handle.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    if kind == "json" or head.startswith(b"{"):
        first = head.split(b"\n", 1)[0]
        try:
            obj = json.loads(first)
        except ValueError:
            return "node-link"
        triple = isinstance(obj, dict) and any(k in obj for naming in _JSON_NAMINGS for k in naming[:1])
        return "jsonl" if triple else "node-link"
    if head.startswith(b"<") and b"rdf:RDF" in head:
        return "rdfxml"
    if head.startswith(b"<"):
        return "nt" if re.match(rb"<[^>\s]+>\s+<[^>\s]+>", head) else "graphml"
    if head.startswith((b"@prefix", b"@base", b"PREFIX", b"BASE")):
        return "turtle"
    if re.match(rb"(#[^\n]*\n\s*)*(graph|Creator|Version)\b", head):
        return "gml"
    return "table"


#: Readers of the formats that need only the path (tables take their delimiter, RDF its syntax).
_READERS = {"jsonl": _read_jsonl, "graphml": _read_graphml, "gml": _read_gml, "node-link": _read_node_link}


# ---------------------------------------------------------------------------------------------- public


def load_graph(
    path: str | Path,
    labels: str | Path | None = None,
    *,
    fmt: str | None = None,
    skip_bad_rows: bool = False,
    keep_self_loops: bool = False,
    dangling: str = "drop",
) -> nx.MultiDiGraph:
    """Read a knowledge graph file (and optionally a labels file) into a ``MultiDiGraph``; see the module doc."""
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    if dangling not in DANGLING:
        raise ConfigError(f"dangling must be one of {', '.join(DANGLING)}, got {dangling!r}")
    kind = fmt or _detect_format(path)
    if kind not in (*FORMATS, "table"):
        raise ConfigError(f"graph format must be one of {', '.join(FORMATS)}, got {kind!r}")
    b = _Builder(path, skip_bad_rows, keep_self_loops, dangling)
    if kind in ("tsv", "csv", "table"):
        _read_table(b, path, {"tsv": "\t", "csv": ","}.get(kind))
    elif kind in _RDF:
        _read_rdf(b, path, kind)
    else:
        _READERS[kind](b, path)
    if b.G.number_of_edges() == 0:
        raise RecordError(f"{path}: no facts found (is it a {kind} file of head, relation, tail triples?)")
    stats = b.stats("tsv" if kind == "table" else kind)
    if labels is not None:
        stats["labels"] = read_labels(b, Path(labels))
    b.G.graph["stats"] = stats
    return b.G


def read_labels(b: _Builder, path: Path) -> dict[str, Any]:
    """Add display labels from ``id<TAB>label`` rows (or a header ``id label_en label_zh``); returns counts."""
    if not path.is_file():
        raise RecordError(f"{path}: no such labels file")
    suffix_lang = next(
        (part.lower() for part in path.name.split(".")[1:-1] if re.fullmatch(r"[A-Za-z]{2}", part)), None
    )
    delimiter = "," if path.suffix.lower() == ".csv" else "\t"
    known = set(b.G.nodes) | {r for _, _, r in b.G.edges(keys=True)}
    loaded, unused = 0, 0
    langs: list[str] | None = None
    with _utf8(path), path.open(encoding="utf-8-sig", newline="") as handle:
        for number, cells in _rows(handle, path, delimiter):
            where = f"{path}:{number}"
            if langs is None:
                langs = _label_header(cells)
                if langs is not None:
                    continue
                langs = [suffix_lang or ANY_LANG]
            if len(cells) != len(langs) + 1:
                b.bad_row(
                    where,
                    f"expected {len(langs) + 1} columns (id, {', '.join(f'label {x}' for x in langs)}), "
                    f"got {len(cells)}",
                )
                continue
            node = _clean(cells[0])
            if not node:
                b.bad_row(where, "empty id")
                continue
            if node not in known:
                unused += 1
                continue
            for lang, label in zip(langs, cells[1:]):
                if label.strip():
                    b.add_label(lang, node, label)
                    loaded += 1
    return {"path": str(path), "languages": langs or [], "loaded": loaded, "unused": unused}


def _label_header(cells: list[str]) -> list[str] | None:
    """Languages of the label columns when ``cells`` is a header row (``id, label_zh`` / ``id, zh``), else None."""
    names = [c.strip().lower() for c in cells]
    if len(names) < 2 or names[0] not in ("id", "entity", "entity_id", "node", "key", "relation"):
        return None
    langs = []
    for name in names[1:]:
        match = _LABEL_ATTR.fullmatch(name)
        if match:
            langs.append(match.group(1) or ANY_LANG)
        elif re.fullmatch(r"[a-z]{2}(?:[-_][a-z]+)?", name):
            langs.append(name[:2])
        else:
            return None
    return langs
