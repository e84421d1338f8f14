"""RDF knowledge graphs for Self-KG: N-Triples, Turtle, RDF/XML and JSON-LD, read with rdflib.

    datagen self-kg --graph seeds/kg/plants.ttl --lang zh --num 20 --out gen/kg/     # .nt .ttl .rdf .owl .jsonld

What becomes what (``graph.load_graph`` hands the triples to the same builder as every other format):

- ``<s> <p> <o>`` between resources: a fact ``s -[p]-> o``. Entities and relations keep their IRIs as ids, so
  every record's provenance (``meta.source``) names the IRIs it rests on; prompts show labels.
- ``rdfs:label``, ``skos:prefLabel`` (and ``skos:altLabel``, ``foaf:name``, ``schema:name`` where nothing
  better exists) are display labels, not facts, per language tag: ``"蔷薇"@zh`` labels the Chinese run,
  ``"dog rose"@en`` the English one, an untagged literal any run.
- Any other literal object (``ex:height "2 m"``, ``ex:bloomMonth 6``) is an attribute fact: the literal is the
  tail, marked ``literal``. Literals in a language other than English or Chinese are skipped (counted).
- Blank nodes keep rdflib's ``_:`` ids.

N-Triples are streamed line by line (``W3CNTriplesParser`` with a sink), so a large dump is never held as an
rdflib graph; the other syntaxes are parsed whole. JSON-LD must carry its ``@context`` inline: a remote
context would be fetched from the network at run time, which this tool never does.

    >>> from pathlib import Path; import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "g.nt"
    >>> _ = path.write_text('<http://x.org/a> <http://x.org/partOf> <http://x.org/b> .\\n'
    ...                     '<http://x.org/a> <http://www.w3.org/2000/01/rdf-schema#label> "rose"@en .\\n')
    >>> [(kind, s, p, o) for kind, s, p, o in read_rdf(path, "nt")]
    [('fact', 'http://x.org/a', 'http://x.org/partOf', 'http://x.org/b'), ('label:en', 'http://x.org/a', '', 'rose')]
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from datagen.errors import RecordError
from datagen.text import LANGS

#: rdflib's parser names, by our format name.
SYNTAXES = {"nt": "nt", "turtle": "turtle", "rdfxml": "xml", "jsonld": "json-ld"}
#: Label predicates, best first: a node's label in a language comes from the first of these that gives one.
LABEL_PREDICATES = (
    "http://www.w3.org/2004/02/skos/core#prefLabel",
    "http://www.w3.org/2000/01/rdf-schema#label",
    "http://xmlns.com/foaf/0.1/name",
    "http://schema.org/name",
    "https://schema.org/name",
    "http://www.w3.org/2004/02/skos/core#altLabel",
)


def read_rdf(path: Path, fmt: str) -> Iterator[tuple[str, str, str, str]]:
    """``("fact" | "attribute" | "label:<lang>" | "skipped", subject, predicate, object)`` for every triple.

    Labels come last, in predicate order (best last, so the best one wins when the caller overwrites), and
    ``label:*`` stands for an untagged label. A syntax error is a RecordError naming the file (and line where
    rdflib says it)."""
    labels: list[tuple[int, str, str, str]] = []
    for s, p, o in _triples(path, fmt):
        subject, predicate = _node_id(s), str(p)
        if not _is_literal(o):
            yield "fact", subject, predicate, _node_id(o)
            continue
        lang = _literal_lang(o)
        if predicate not in LABEL_PREDICATES:
            yield ("skipped" if lang is None else "attribute"), subject, predicate, str(o)
        elif lang is not None:
            labels.append((LABEL_PREDICATES.index(predicate), lang, subject, str(o)))
    for _, lang, subject, text in sorted(labels, key=lambda row: -row[0]):
        yield f"label:{lang}", subject, "", text


def check_jsonld_context(data: Any, path: Path) -> None:
    """Refuse a JSON-LD document whose ``@context`` names a URL: rdflib would fetch it over the network."""
    if isinstance(data, dict):
        for key, value in data.items():
            if key == "@context" and _remote(value):
                raise RecordError(
                    f"{path}: JSON-LD @context {json.dumps(value)[:120]} is remote; datagen never "
                    "fetches from the network at run time: put the context inline"
                )
            check_jsonld_context(value, path)
    elif isinstance(data, list):
        for item in data:
            check_jsonld_context(item, path)


def _remote(context: Any) -> bool:
    return isinstance(context, str) or isinstance(context, list) and any(_remote(c) for c in context)


def _triples(path: Path, fmt: str) -> Iterator[tuple[Any, Any, Any]]:
    if fmt == "nt":
        yield from _stream_ntriples(path)
        return
    import rdflib

    if fmt == "jsonld":
        try:
            check_jsonld_context(json.loads(path.read_text(encoding="utf-8-sig")), path)
        except json.JSONDecodeError as exc:
            raise RecordError(f"{path}:{exc.lineno}: invalid JSON-LD: {exc.msg} at column {exc.colno}") from None
    graph = rdflib.Graph()
    try:
        graph.parse(str(path), format=SYNTAXES[fmt])
    except RecordError:
        raise
    except Exception as exc:  # rdflib raises many types (BadSyntax, SAXParseException, ParserError, …)
        raise RecordError(f"{path}: invalid {fmt} ({type(exc).__name__}: {_short(exc)})") from None
    yield from graph


def _stream_ntriples(path: Path) -> Iterator[tuple[Any, Any, Any]]:
    """N-Triples one line at a time: memory stays flat however large the dump."""
    from rdflib.plugins.parsers.ntriples import W3CNTriplesParser

    buffer: list[tuple[Any, Any, Any]] = []

    class _Sink:
        def triple(self, s: Any, p: Any, o: Any) -> None:
            buffer.append((s, p, o))

    parser = W3CNTriplesParser(sink=_Sink())
    with path.open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                parser.parsestring(line)
            except Exception as exc:  # rdflib's ParseError and friends
                raise RecordError(f"{path}:{number}: invalid N-Triples ({_short(exc)})") from None
            yield from buffer
            buffer.clear()


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


def _is_literal(node: Any) -> bool:
    from rdflib import Literal

    return isinstance(node, Literal)


def _literal_lang(node: Any) -> str | None:
    """``en``/``zh``/``*`` (untagged) for a literal a run can show, None for another language."""
    lang = (node.language or "").lower()
    if not lang:
        return "*"
    primary = lang.split("-")[0]
    return primary if primary in LANGS else None


def _node_id(node: Any) -> str:
    from rdflib import BNode

    return f"_:{node}" if isinstance(node, BNode) else str(node)
