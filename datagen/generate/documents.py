"""Documents for Self-QA: find files, load them as plain text, and cut the text into overlapping chunks.

    docs, skipped = load_documents("seeds/docs")              # a folder (recursive), a file or a glob
    chunks = [c for d in docs for c in chunk_document(d, size=200, overlap=40)]
    chunks[0].doc_id, chunks[0].start, chunks[0].end          # ('history_of_the_bicycle.html', 0, 709)
    docs[0].text[chunks[0].start:chunks[0].end] == chunks[0].text   # True

Loaders: ``.txt``/``.md``/``.rst`` (the text as it is), ``.html`` (visible text only: scripts, styles and
other non-content elements are dropped), ``.jsonl`` (one document per line, from a configurable string
field), ``.csv``/``.tsv`` (one sentence per row: ``name: apple; price: 3.``), ``.pdf`` (pypdf) and ``.docx``
(python-docx: paragraphs, then each table row as ``cell | cell``). Bytes that are not UTF-8 are decoded with the
encoding charset-normalizer detects. A file that is empty, binary, undecodable, unreadable or of an unknown type
is skipped and reported with its reason; it never stops the run. A path that does not exist is a ConfigError.

A document's ``text`` is what the loader produced (decoded, newlines normalized to ``\\n``); chunk spans
index into it: ``[start, end)`` in characters, ``[byte_start, byte_end)`` in its UTF-8 encoding.

Chunking counts tokens cheaply and without a model: a Latin word is one token, a CJK character is one
token (``datagen.text.is_cjk``), and a run without spaces counts one token per ``MAX_TOKEN_CHARS`` characters,
so a chunk is bounded in characters too. A chunk holds at most ``size`` tokens and ends, by preference, at a
paragraph break, then a line break, then a sentence end (``. ! ?`` followed by a space, or ``。！？`` anywhere),
then a clause end (``, ; :`` followed by a space, or ``，、；：``); only a run longer than ``size`` with none of
these is cut between tokens. The next chunk starts on a sentence boundary inside the last ``overlap`` tokens
if one shares at least half of them, else on a clause boundary there, else exactly ``overlap`` tokens back.
So chunks cover the whole text, consecutive chunks share at most ``overlap`` tokens, and no boundary falls
inside a character. The text is tokenized and scanned for boundaries once, so chunking takes linear time.
"""

from __future__ import annotations

import bisect
import csv
import functools
import glob
import hashlib
import io
import itertools
import json
import logging
import os
import re
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from datagen.errors import ConfigError
from datagen.text import detect_lang, is_cjk

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("datagen.documents")
_SURROGATE = re.compile("[\ud800-\udfff]")

#: File types a loader exists for.
TEXT_SUFFIXES = (".txt", ".text", ".md", ".markdown", ".rst")
HTML_SUFFIXES = (".html", ".htm", ".xhtml")
SUFFIXES = (*TEXT_SUFFIXES, *HTML_SUFFIXES, ".jsonl", ".csv", ".tsv", ".pdf", ".docx")


@dataclass(frozen=True)
class Document:
    """One loaded document; ``doc_id`` is its path relative to what was given (``a/b.md``, ``x.jsonl:3``)."""

    doc_id: str
    text: str
    path: Path
    encoding: str = "utf-8"  # the encoding the bytes were decoded with


@dataclass(frozen=True)
class Skipped:
    """A file that yielded no document, and why (reported in ``stats.json``)."""

    doc_id: str
    reason: str


@dataclass(frozen=True)
class Chunk:
    """A piece of a document: ``text == document.text[start:end]``; ``hash`` identifies the content."""

    doc_id: str
    index: int  # position among the document's chunks
    start: int  # character span [start, end) into the document's text
    end: int
    byte_start: int  # the same span in the text's UTF-8 bytes
    byte_end: int
    text: str
    tokens: int
    hash: str  # sha256 of the chunk text (first 16 hex digits)

    @property
    def key(self) -> str:
        """Stable identity for resume: where the chunk is and what it holds."""
        return f"{self.doc_id}@{self.start}-{self.end}:{self.hash}"


class _Skip(Exception):
    """Raised by a loader: this file yields no document, for the reason given."""


# ---------------------------------------------------------------------------------------------- finding


def find_files(spec: str | Path) -> tuple[Path, list[Path]]:
    """The files ``spec`` names and the folder their ``doc_id``s are relative to.

    ``spec`` is a file, a folder (walked recursively; hidden files and folders are left out) or a glob
    (``docs/**/*.md``). A spec that matches nothing is a ConfigError.
    """
    spec_str = str(spec)
    path = Path(spec_str).expanduser()
    if path.is_dir():
        files = [
            p
            for p in path.rglob("*")
            if not p.is_dir() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        ]
        return path, sorted(files)
    if path.exists() or path.is_symlink():
        return path.parent, [path]
    if glob.has_magic(spec_str):
        matches = [Path(m) for m in glob.glob(str(path), recursive=True)]
        files = sorted(p for p in matches if not p.is_dir())
        if not files:
            raise ConfigError(f"--docs {spec_str!r}: the pattern matches no file")
        return _glob_root(path), files
    raise ConfigError(f"--docs {spec_str}: no such file or folder")


def _glob_root(pattern: Path) -> Path:
    """The longest leading part of a glob without wildcards: what its doc_ids are relative to."""
    return Path(*itertools.takewhile(lambda part: not glob.has_magic(part), pattern.parts))


# ---------------------------------------------------------------------------------------------- loading


def load_documents(spec: str | Path, text_field: str = "text") -> tuple[list[Document], list[Skipped]]:
    """Load every document ``spec`` names; files that yield nothing come back as ``Skipped`` with a reason."""
    root, files = find_files(spec)
    docs: list[Document] = []
    skipped: list[Skipped] = []
    for path in files:
        doc_id = (path.relative_to(root) if path.is_relative_to(root) else path).as_posix()
        if _SURROGATE.search(doc_id):
            # A file name that is not UTF-8 (Latin-1 from an old archive): readable through its Path, but no
            # UTF-8 record can hold its name. Load it under a name with U+FFFD for the undecodable bytes.
            doc_id = _SURROGATE.sub("\ufffd", doc_id)
            log.warning("%s: file name is not valid UTF-8; its documents are named %r", os.fsencode(path), doc_id)
        try:
            loaded = list(_load_file(path, doc_id, text_field=text_field))
        except _Skip as exc:
            skipped.append(Skipped(doc_id, str(exc)))
            continue
        for item in loaded:
            (docs if isinstance(item, Document) else skipped).append(item)
    return docs, skipped


def _load_file(path: Path, doc_id: str, text_field: str = "text") -> Iterator[Document | Skipped]:
    """The document(s) in one file (a ``.jsonl`` holds one per line); raises ``_Skip`` when there are none."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise _Skip(f"unsupported file type {suffix or '(no extension)'}; supported: {' '.join(SUFFIXES)}")
    if not path.is_file():
        raise _Skip("unreadable: not a regular file (a broken link?)")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _Skip(f"unreadable: {exc.strerror or exc}") from None
    if not data.strip():
        raise _Skip("empty file")
    if suffix in _BINARY_LOADERS:
        yield _document(doc_id, path, _BINARY_LOADERS[suffix](data), suffix[1:])
        return
    text, encoding = decode_bytes(data)
    if suffix == ".jsonl":
        yield from _jsonl_documents(text, doc_id, path, encoding, text_field)
        return
    loader: Callable[[str], str] = _LOADERS.get(suffix, lambda t: t)
    yield _document(doc_id, path, loader(text), encoding)


def _document(doc_id: str, path: Path, text: str, encoding: str) -> Document:
    if not text.strip():
        raise _Skip("no text in the file")
    return Document(doc_id=doc_id, text=text, path=path, encoding=encoding)


def decode_bytes(data: bytes) -> tuple[str, str]:
    """Text and encoding name: UTF-8 (with or without BOM), UTF-16 by BOM, else what charset-normalizer finds.

    Raises ``_Skip`` for binary data (NUL bytes without a UTF-16 BOM) and for bytes no encoding explains.
    """
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding, text = "utf-16", data.decode("utf-16", errors="replace")
    elif b"\x00" in data[:8192]:
        raise _Skip("binary file (contains NUL bytes)")
    else:
        try:
            encoding, text = "utf-8", data.decode("utf-8-sig")
        except UnicodeDecodeError:
            from charset_normalizer import from_bytes

            best = from_bytes(data).best()
            if best is None:
                raise _Skip("binary or undecodable file (no text encoding fits its bytes)") from None
            encoding, text = best.encoding, str(best)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if _control_share(text) > 0.05:
        raise _Skip(f"binary file (mostly control characters when decoded as {encoding})")
    return text, encoding


def _control_share(text: str) -> float:
    sample = text[:8192]
    control = sum(1 for c in sample if ord(c) < 32 and c not in "\n\t\f\v")
    return control / max(1, len(sample))


def _html_text(markup: str) -> str:
    """Visible text of an HTML page: one paragraph per block element; scripts, styles and forms dropped."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(markup, "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "head", "svg", "iframe", "object", "form", "button"]):
        tag.decompose()
    blocks = (
        "p",
        "div",
        "section",
        "article",
        "main",
        "header",
        "footer",
        "aside",
        "nav",
        "blockquote",
        "pre",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "li",
        "dt",
        "dd",
        "tr",
        "table",
        "ul",
        "ol",
        "dl",
        "figure",
        "figcaption",
        "caption",
        "address",
        "hr",
        "br",
    )
    for tag in soup.find_all(blocks):
        prefix = "- " if tag.name == "li" else ""
        tag.insert_before("\n\n" + prefix)
        tag.insert_after("\n\n")
    for cell in soup.find_all(["td", "th"]):
        cell.insert_after(" ")
    return _tidy(soup.get_text())


def _tidy(text: str) -> str:
    """Collapse runs of spaces within lines and of blank lines between paragraphs."""
    lines = [re.sub(r"[ \t\u00a0]+", " ", line).strip() for line in text.split("\n")]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _table_text(text: str, delimiter: str) -> str:
    """One sentence per row: ``header: value; header: value.`` (empty cells are left out)."""
    rows = [row for row in csv.reader(io.StringIO(text), delimiter=delimiter) if any(c.strip() for c in row)]
    if len(rows) < 2:
        raise _Skip("table has a header but no rows" if rows else "no text in the file")
    header = [h.strip() or f"column {i + 1}" for i, h in enumerate(rows[0])]
    zh = detect_lang(" ".join(header)) == "zh"
    colon, sep, stop = ("：", "；", "。") if zh else (": ", "; ", ".")
    sentences = []
    for row in rows[1:]:
        cells = [
            f"{header[i] if i < len(header) else f'column {i + 1}'}{colon}{v.strip()}"
            for i, v in enumerate(row)
            if v.strip()
        ]
        sentence = sep.join(cells)
        sentences.append(sentence if sentence.endswith((".", "!", "?", "。", "！", "？")) else sentence + stop)
    return "\n".join(sentences)


def _jsonl_documents(text: str, doc_id: str, path: Path, encoding: str, field: str) -> Iterator[Document | Skipped]:
    found = False
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{doc_id}:{number}"
        try:
            value = json.loads(line)
        except ValueError as exc:
            yield Skipped(where, f"invalid JSON: {exc}")
            continue
        except RecursionError:
            yield Skipped(where, "invalid JSON: nested too deeply")
            continue
        body = value.get(field) if isinstance(value, dict) else None
        if not isinstance(body, str) or not body.strip():
            yield Skipped(where, f"no non-empty string field {field!r}")
            continue
        if _SURROGATE.search(body):  # a "\ud800" escape: no UTF-8 output could hold it
            body = _SURROGATE.sub("\ufffd", body)
            log.warning("%s: lone UTF-16 surrogate(s) replaced with U+FFFD", where)
        found = True
        yield Document(doc_id=where, text=body.replace("\r\n", "\n"), path=path, encoding=encoding)
    if not found:
        raise _Skip(f"no line with a non-empty string field {field!r}")


def _pdf_text(data: bytes) -> str:
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
    except Exception as exc:  # pypdf raises many types for broken or encrypted files
        raise _Skip(f"unreadable PDF: {type(exc).__name__}: {exc}") from None
    text = _tidy("\n\n".join(p for p in pages if p))
    if not text:
        raise _Skip("PDF has no extractable text (a scanned image?)")
    return text


def _docx_text(data: bytes) -> str:
    """The text of a Word file: its paragraphs in order, then each table row as ``cell | cell`` (headers and
    footers, which repeat on every page, are left out)."""
    import docx

    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:  # python-docx raises zip, XML and key errors for broken files
        raise _Skip(f"unreadable .docx: {type(exc).__name__}: {exc}") from None
    parts = [p.text for p in document.paragraphs]
    for table in document.tables:
        for row in table.rows:
            parts.append(" | ".join(cell.text.strip() for cell in row.cells))
    text = _tidy("\n\n".join(p for p in parts if p.strip()))
    if not text:
        raise _Skip("no text in the .docx")
    return text


#: Loaders of formats that are not text: they get the file's bytes.
_BINARY_LOADERS: dict[str, Callable[[bytes], str]] = {".pdf": _pdf_text, ".docx": _docx_text}

_LOADERS: dict[str, Callable[[str], str]] = {
    **{s: _html_text for s in HTML_SUFFIXES},
    ".csv": lambda t: _table_text(t, ","),
    ".tsv": lambda t: _table_text(t, "\t"),
}


# ---------------------------------------------------------------------------------------------- chunking

#: A run of non-space, non-CJK characters counts one token per this many characters. Unbounded, a 10 MB line
#: without a space would be one token, and the chunk holding it one 10 MB prompt.
MAX_TOKEN_CHARS = 32
_WORD, _SPACE, _CJK = 0, 1, 2  # what a character is to the tokenizer
# Where a new unit may start, by strength: 0 after a clause, 1 after a sentence, 2 after a line break, 3 after
# a blank line, as (strength, the marks that open it, what follows a mark).
_BOUNDARIES = (
    (0, ",;:", r"\s+"),
    (0, "，、；：", r"\s*"),
    (1, ".!?…", r"[.!?…]*[\"'”’)\]]*\s+"),
    (1, "。！？；", r"[。！？；]*[”’」』）)]*\s*"),
    (2, "\n", r"\s*"),
    (3, "\n", r"[ \t]*\n\s*"),
)
# A pattern per mark: one that opens on a literal lets the regex engine jump from one occurrence to the next,
# where opening on a character class makes it test every character (20× slower on a 50 MB document).
_BOUNDARY_PATTERNS: tuple[tuple[int, re.Pattern[str]], ...] = tuple(
    (level, re.compile(re.escape(mark) + then)) for level, marks, then in _BOUNDARIES for mark in marks
)
# A markdown heading from its first "#", and in group 1 the line break after it.
# Written "##{0,5}", not "#{1,6}": opening on a literal lets the engine jump from one "#" to the next.
_HEADING = re.compile(r"##{0,5}[^\S\n][^\n]*(?=(\n\s*))")


def token_starts(text: str) -> array[int]:
    """Character offsets where tokens start: each CJK character, and each run of other non-space characters
    (a Latin word), which counts again every ``MAX_TOKEN_CHARS`` characters.

    Vectorized with numpy over all characters at once: a 50 MB document (8 million tokens) takes about 0.5 s,
    where a regex scan took 3 s and an ``is_cjk`` call per character 20 s. The result is an ``array`` of
    8-byte ints, a fifth of the memory of a list.
    """
    import numpy as np

    kinds = _char_kinds(text)
    words = np.zeros(len(kinds) + 2, np.int8)
    words[1:-1] = kinds == _WORD
    edges = np.diff(words)  # 1 where a run of word characters starts, -1 just after it
    firsts = np.flatnonzero(edges == 1)
    lengths = np.flatnonzero(edges == -1) - firsts
    starts = np.concatenate([firsts, np.flatnonzero(kinds == _CJK), _split_points(firsts, lengths)])
    starts.sort(kind="stable")  # three sorted runs: timsort merges them in linear time
    return array("q", starts.astype(np.int64, copy=False).tobytes())


def _split_points(firsts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The extra token starts inside word runs longer than ``MAX_TOKEN_CHARS``: every that many characters."""
    import numpy as np

    extra = (lengths - 1) // MAX_TOKEN_CHARS  # tokens after the first, per run
    firsts, extra = firsts[extra > 0], extra[extra > 0]
    nth = np.arange(extra.sum()) - np.repeat(np.cumsum(extra) - extra, extra) + 1  # 1, 2, … within a run
    return np.repeat(firsts, extra) + nth * MAX_TOKEN_CHARS


def _char_kinds(text: str) -> np.ndarray:
    """``_WORD``, ``_SPACE`` or ``_CJK`` per character. ASCII text is read a byte per character, other text
    as UTF-32 code points; the few beyond the BMP (emoji: word characters, rare ideographs: CJK) one by one."""
    import numpy as np

    if text.isascii():
        return _kind_table()[np.frombuffer(text.encode("ascii"), np.uint8)]
    codes = np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), np.uint32)
    kinds = _kind_table()[codes.clip(max=0xFFFF)]
    astral = np.flatnonzero(codes > 0xFFFF)
    kinds[astral] = [_CJK if is_cjk(chr(code)) else _WORD for code in codes[astral].tolist()]
    return kinds


@functools.cache
def _kind_table() -> np.ndarray:
    """The kind of every BMP character, decided by ``str.isspace`` (regex ``\\s``) and ``text.is_cjk``."""
    import numpy as np

    kinds = (_SPACE if c.isspace() else _CJK if is_cjk(c) else _WORD for c in map(chr, range(0x10000)))
    return np.fromiter(kinds, np.uint8, count=0x10000)


def count_tokens(text: str) -> int:
    """Tokens as the chunker counts them: Latin words plus CJK characters."""
    return len(token_starts(text))


def _boundaries(text: str, starts: array[int]) -> tuple[list[int], list[int]]:
    """The tokens a chunk may end before (and the next begin at), in order, and the strength of each.

    Only positions where a token starts count: in ``。word`` the sentence mark sits inside a token.
    """
    import numpy as np

    positions, levels = _strongest_boundaries(text)
    tokens = np.frombuffer(starts, np.int64)
    index = np.searchsorted(tokens, positions)
    aligned = tokens[index.clip(max=len(tokens) - 1)] == positions
    return index[aligned].tolist(), levels[aligned].tolist()


def _strongest_boundaries(text: str) -> tuple[np.ndarray, np.ndarray]:
    """Every position where a unit may start, sorted, with the strongest level that starts there.

    The match ends go straight from the regex engine into numpy: a dict built a match at a time took
    most of the time chunking a 50 MB document.
    """
    import numpy as np

    found = [np.fromiter(map(re.Match.end, pattern.finditer(text)), np.int64) for _, pattern in _BOUNDARY_PATTERNS]
    positions = np.concatenate(found)
    levels = np.repeat([level for level, _ in _BOUNDARY_PATTERNS], [len(ends) for ends in found])
    order = np.lexsort((-levels, positions))  # by position, the strongest first
    positions, strongest = np.unique(positions[order], return_index=True)
    levels = levels[order][strongest]
    # A chunk that ends right after a markdown heading would orphan it from its section.
    levels[np.isin(positions, np.fromiter(_after_headings(text), np.int64))] = 1
    return positions, levels


def _after_headings(text: str) -> Iterator[int]:
    """Where the line break after each markdown heading (``## Section``, indented ≤ 3 spaces) ends."""
    for match in _HEADING.finditer(text):
        indent = text[text.rfind("\n", 0, match.start()) + 1 : match.start()]
        if len(indent) <= 3 and not indent.strip():
            yield match.end(1)


def chunk_spans(text: str, size: int, overlap: int) -> list[tuple[int, int]]:
    """Character spans ``[start, end)`` of the chunks of ``text`` (see the module docstring for the rules)."""
    return [(start, end) for start, end, _ in _chunk(text, size, overlap)]


def _chunk(text: str, size: int, overlap: int) -> list[tuple[int, int, int]]:
    """``(start, end, tokens)`` per chunk: its character span and how many tokens it holds.

    The text is tokenized and searched for boundaries once; then chunks are cut in token indices, each step a
    bisection into the sorted cuts, so no chunk re-scans what came before it.
    """
    if size < 1 or not 0 <= overlap < size:
        raise ConfigError(f"chunking needs size ≥ 1 and 0 ≤ overlap < size, got size={size}, overlap={overlap}")
    starts = token_starts(text)
    if not starts:
        return [(0, len(text), 0)] if text else []
    cuts, levels = _boundaries(text, starts)
    spans: list[tuple[int, int]] = []  # in token indices: [first, end)
    first = 0
    while len(starts) - first > size:
        end = _best_cut(cuts, levels, first, size)
        spans.append((first, end))
        first = _next_begin(cuts, levels, first, end, overlap)
    spans.append((first, len(starts)))

    def at(token: int) -> int:
        """Where token ``token`` starts; the first chunk also holds any space before the first token."""
        return 0 if token == 0 else starts[token] if token < len(starts) else len(text)

    return [(at(first), at(end), end - first) for first, end in spans]


def _best_cut(cuts: list[int], levels: list[int], first: int, size: int) -> int:
    """The token a chunk starting at token ``first`` ends before: the strongest boundary within ``size`` tokens
    that keeps at least half of them, the latest of equal strength; a shorter chunk only when none does."""
    limit = first + size  # the chunk must end at or before the (size+1)-th token
    lo, hi = bisect.bisect_right(cuts, first), bisect.bisect_right(cuts, limit)
    candidates = list(zip(cuts[lo:hi], levels[lo:hi]))
    min_end = first + max(1, size // 2)
    # Each boundary strength keeping half the tokens, strongest first; then a sentence or clause end anywhere.
    for level, floor in ((3, min_end), (2, min_end), (1, min_end), (0, min_end), (1, 0), (0, 0)):
        good = [cut for cut, strength in candidates if strength >= level and cut >= floor]
        if good:
            return good[-1]
    return limit  # a run longer than `size` with no boundary: cut between tokens


def _next_begin(cuts: list[int], levels: list[int], first: int, end: int, overlap: int) -> int:
    """The token the chunk after ``[first, end)`` starts at: a boundary inside its last ``overlap`` tokens."""
    window = max(first + 1, end - overlap)  # the earliest start that keeps the overlap ≤ `overlap` tokens
    if window >= end:
        return end
    lo, hi = bisect.bisect_left(cuts, window), bisect.bisect_left(cuts, end)
    sentences = [cut for cut, strength in zip(cuts[lo:hi], levels[lo:hi]) if strength >= 1]
    if sentences and (end - sentences[0]) * 2 >= overlap:
        return sentences[0]  # a sentence start sharing at least half the overlap
    if lo < hi:
        return cuts[lo]  # a clause start
    return window  # neither: overlap exactly, between tokens


def chunk_document(document: Document, size: int = 200, overlap: int = 40) -> list[Chunk]:
    """The document's chunks, with character and byte spans and a content hash."""
    text = document.text
    spans = _chunk(text, size, overlap)
    chunks = []
    byte_starts = _utf8_offsets(text, (start for start, _, _ in spans))
    for index, ((start, end, tokens), byte_start) in enumerate(zip(spans, byte_starts)):
        piece = text[start:end]
        encoded = piece.encode("utf-8")
        chunks.append(
            Chunk(
                doc_id=document.doc_id,
                index=index,
                start=start,
                end=end,
                byte_start=byte_start,
                byte_end=byte_start + len(encoded),
                text=piece,
                tokens=tokens,
                hash=hashlib.sha256(encoded).hexdigest()[:16],
            )
        )
    return chunks


def _utf8_offsets(text: str, positions: Iterable[int]) -> Iterator[int]:
    """UTF-8 byte offsets of non-decreasing character positions, encoding each stretch between them once
    (re-encoding from the start for every overlapping chunk made a 50 MB document take minutes)."""
    char = byte = 0
    for position in positions:
        byte += len(text[char:position].encode("utf-8"))
        char = position
        yield byte
