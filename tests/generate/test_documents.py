"""Document loaders and chunking: what each loader yields, how broken files are reported, and span invariants."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datagen.errors import ConfigError
from datagen.generate import documents
from datagen.generate.documents import (
    MAX_TOKEN_CHARS,
    Document,
    chunk_document,
    chunk_spans,
    count_tokens,
    find_files,
    load_documents,
    token_starts,
)
from datagen.text import is_cjk

# ---------------------------------------------------------------------------------------------- loaders


def load_one(path: Path, **kwargs) -> Document:
    docs, skipped = load_documents(path, **kwargs)
    assert skipped == [] and len(docs) == 1
    return docs[0]


def test_text_and_markdown_are_loaded_as_they_are_with_relative_ids(tmp_path):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "a.txt").write_bytes(b"Line one.\r\nLine two.\r\n")
    (tmp_path / "sub" / "deeper" / "b.md").write_text("# Title\n\nSome *markdown* text.\n", encoding="utf-8")
    (tmp_path / "sub" / ".hidden.md").write_text("hidden", encoding="utf-8")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "c.txt").write_text("not a document", encoding="utf-8")

    docs, skipped = load_documents(tmp_path)
    assert skipped == []
    assert {d.doc_id: d.text for d in docs} == {
        "a.txt": "Line one.\nLine two.\n",
        "sub/deeper/b.md": "# Title\n\nSome *markdown* text.\n",
    }
    assert load_one(tmp_path / "a.txt").doc_id == "a.txt"  # a single file: its own name


def test_html_keeps_visible_text_only_one_paragraph_per_block(tmp_path):
    (tmp_path / "page.html").write_text(
        "<html><head><title>T</title><style>p {color: red}</style><script>var x = 'secret';</script></head>"
        "<body><h1>Bicycles</h1><p>The <b>draisine</b> came   first.</p>"
        "<ul><li>wood</li><li>iron</li></ul><noscript>enable js</noscript>"
        "<table><tr><td>1817</td><td>Drais</td></tr></table><script>alert(1)</script></body></html>",
        encoding="utf-8",
    )
    text = load_one(tmp_path / "page.html").text
    assert text == "Bicycles\n\nThe draisine came first.\n\n- wood\n\n- iron\n\n1817 Drais"
    for hidden in ("secret", "color", "alert", "enable js"):
        assert hidden not in text


def test_jsonl_has_one_document_per_line_from_a_configurable_field(tmp_path):
    path = tmp_path / "notes.jsonl"
    path.write_text(
        '{"text": "First note.", "body": "B1"}\n\n{"text": "Second note."}\n{"title": "no text"}\nnot json\n',
        encoding="utf-8",
    )
    docs, skipped = load_documents(path)
    assert [(d.doc_id, d.text) for d in docs] == [("notes.jsonl:1", "First note."), ("notes.jsonl:3", "Second note.")]
    assert [(s.doc_id, s.reason.split(":")[0]) for s in skipped] == [
        ("notes.jsonl:4", "no non-empty string field 'text'"),
        ("notes.jsonl:5", "invalid JSON"),
    ]

    docs, skipped = load_documents(path, text_field="body")
    assert [(d.doc_id, d.text) for d in docs] == [("notes.jsonl:1", "B1")]
    assert len(skipped) == 3

    docs, skipped = load_documents(path, text_field="missing")
    assert docs == [] and [s.reason for s in skipped] == ["no line with a non-empty string field 'missing'"]


def test_tables_become_one_sentence_per_row(tmp_path):
    (tmp_path / "fruit.csv").write_text('name,price,note\napple,3,\n"pear, ripe",4,Sweet!\n,,\n', encoding="utf-8")
    (tmp_path / "fruit.tsv").write_text("name\tprice\nplum\t2.50\n", encoding="utf-8")
    (tmp_path / "水果.csv").write_text("名称,价格\n苹果,3元\n", encoding="utf-8")
    (tmp_path / "header_only.csv").write_text("name,price\n", encoding="utf-8")
    docs, skipped = load_documents(tmp_path)
    assert {d.doc_id: d.text for d in docs} == {
        "fruit.csv": "name: apple; price: 3.\nname: pear, ripe; price: 4; note: Sweet!",
        "fruit.tsv": "name: plum; price: 2.50.",
        "水果.csv": "名称：苹果；价格：3元。",
    }
    assert [(s.doc_id, s.reason) for s in skipped] == [("header_only.csv", "table has a header but no rows")]


def _minimal_pdf(text: str) -> bytes:
    """A one-page PDF showing ``text`` in Helvetica, with a correct xref table."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def test_pdf_text_is_extracted_and_a_broken_pdf_is_skipped(tmp_path):
    pytest.importorskip("pypdf")
    (tmp_path / "ok.pdf").write_bytes(_minimal_pdf("Volcanoes erupt molten rock."))
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not really a pdf")
    docs, skipped = load_documents(tmp_path)
    assert [(d.doc_id, d.text) for d in docs] == [("ok.pdf", "Volcanoes erupt molten rock.")]
    assert [s.doc_id for s in skipped] == ["broken.pdf"]
    assert skipped[0].reason.startswith(("unreadable PDF", "PDF has no extractable text"))


def test_docx_paragraphs_and_tables_are_read_and_a_broken_docx_is_skipped(tmp_path):
    import docx

    document = docx.Document()
    document.add_heading("Volcanoes", level=1)
    document.add_paragraph("Volcanoes erupt molten rock.")
    document.add_paragraph("火山喷发熔岩。")
    table = document.add_table(rows=2, cols=2)
    for row, cells in zip(table.rows, [("name", "height"), ("Etna", "3,357 m")]):
        for cell, text in zip(row.cells, cells):
            cell.text = text
    document.save(tmp_path / "ok.docx")
    (tmp_path / "broken.docx").write_bytes(b"PK\x03\x04 not really a zip")
    docs, skipped = load_documents(tmp_path)
    assert [(d.doc_id, d.text) for d in docs] == [
        ("ok.docx", "Volcanoes\n\nVolcanoes erupt molten rock.\n\n火山喷发熔岩。\n\nname | height\n\nEtna | 3,357 m")
    ]
    assert [s.doc_id for s in skipped] == ["broken.docx"] and skipped[0].reason.startswith("unreadable .docx")


LATIN1 = (
    "Le café de la gare sert une crème brûlée délicieuse. Les élèves préfèrent la tarte aux pommes, "
    "mais le garçon commande toujours un thé très sucré à côté de la fenêtre.\n"
)
CHINESE = (
    "垃圾分类是指按照一定的规定或标准将垃圾分类储存、投放和搬运，从而转变成公共资源的一系列活动。"
    "分类的目的是提高垃圾的资源价值和经济价值，力争物尽其用。"
)


@pytest.mark.parametrize(
    "encoding, text",
    [
        ("latin-1", LATIN1),
        ("gbk", CHINESE),
        ("gb18030", CHINESE * 2),
        ("utf-16", LATIN1),  # with its BOM
        ("utf-8-sig", CHINESE),  # BOM stripped
    ],
)
def test_non_utf8_text_is_decoded_by_detection(tmp_path, encoding, text):
    (tmp_path / "doc.txt").write_bytes(text.encode(encoding))
    doc = load_one(tmp_path / "doc.txt")
    assert doc.text == text
    assert not doc.text.startswith("\ufeff")
    if encoding in ("latin-1", "gbk"):
        assert doc.encoding != "utf-8"


def test_broken_files_are_reported_by_name_and_never_stop_the_run(tmp_path, monkeypatch):
    (tmp_path / "good.md").write_text("A good document.", encoding="utf-8")
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blank.md").write_text("  \n\n \t\n", encoding="utf-8")
    (tmp_path / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4)
    (tmp_path / "noise.html").write_bytes(bytes((i * 7 + 3) % 31 + 1 for i in range(3000)))  # control bytes
    (tmp_path / "dangling.txt").symlink_to(tmp_path / "nowhere.txt")
    (tmp_path / "locked.txt").write_text("secret", encoding="utf-8")
    (tmp_path / "data.xlsx").write_bytes(b"PK\x03\x04")
    (tmp_path / "only_tags.html").write_text("<script>x()</script><style>a{}</style>", encoding="utf-8")

    real_read = Path.read_bytes

    def read_bytes(self):
        if self.name == "locked.txt":  # root ignores chmod 000, so simulate the permission error
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    docs, skipped = load_documents(tmp_path)
    assert [d.doc_id for d in docs] == ["good.md"]
    reasons = {s.doc_id: s.reason for s in skipped}
    assert reasons == {
        "blank.md": "empty file",
        "dangling.txt": "unreadable: not a regular file (a broken link?)",
        "data.xlsx": reasons["data.xlsx"],
        "empty.txt": "empty file",
        "image.txt": "binary file (contains NUL bytes)",
        "locked.txt": "unreadable: Permission denied",
        "noise.html": reasons["noise.html"],
        "only_tags.html": "no text in the file",
    }
    assert reasons["data.xlsx"].startswith("unsupported file type .xlsx")
    assert reasons["noise.html"].startswith("binary")


def test_a_path_that_does_not_exist_or_a_glob_that_matches_nothing_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file or folder"):
        find_files(tmp_path / "missing")
    with pytest.raises(ConfigError, match="matches no file"):
        find_files(str(tmp_path / "*.md"))


def test_a_glob_selects_files_and_ids_are_relative_to_its_fixed_part(tmp_path):
    (tmp_path / "docs" / "a").mkdir(parents=True)
    (tmp_path / "docs" / "x.md").write_text("X.", encoding="utf-8")
    (tmp_path / "docs" / "a" / "y.md").write_text("Y.", encoding="utf-8")
    (tmp_path / "docs" / "a" / "z.txt").write_text("Z.", encoding="utf-8")
    docs, skipped = load_documents(str(tmp_path / "docs" / "**" / "*.md"))
    assert [d.doc_id for d in docs] == ["a/y.md", "x.md"] and skipped == []


# ---------------------------------------------------------------------------------------------- chunking


def _sentence(i: int) -> str:
    return f"Sentence {i} talks about topic {i % 7} with {3 + i % 4} extra filler words here."


LONG_EN = "\n\n".join(" ".join(_sentence(p * 10 + s) for s in range(1 + p % 5)) for p in range(40))


def assert_chunk_invariants(text: str, chunks, size: int, overlap: int) -> None:
    assert chunks[0].start == 0 and chunks[-1].end == len(text)
    encoded = text.encode("utf-8")
    for chunk in chunks:
        assert chunk.text == text[chunk.start : chunk.end]
        # The byte span decodes strictly to the chunk: no boundary falls inside a multi-byte character.
        assert encoded[chunk.byte_start : chunk.byte_end].decode("utf-8") == chunk.text
        assert 1 <= chunk.tokens == count_tokens(chunk.text) <= size
    for before, after in zip(chunks, chunks[1:]):
        assert before.start < after.start <= before.end  # no gap, always progress
        assert count_tokens(text[after.start : before.end]) <= overlap


@pytest.mark.parametrize("size, overlap", [(50, 10), (120, 30), (200, 40), (64, 0), (30, 29)])
def test_chunks_cover_the_document_with_the_configured_overlap(size, overlap):
    doc = Document("long.txt", LONG_EN, Path("long.txt"))
    chunks = chunk_document(doc, size=size, overlap=overlap)
    assert len(chunks) > 2
    assert_chunk_invariants(LONG_EN, chunks, size, overlap)
    shared = [count_tokens(LONG_EN[b.start : a.end]) for a, b in zip(chunks, chunks[1:])]
    if overlap == 0:
        assert all(b.start == a.end for a, b in zip(chunks, chunks[1:]))
    elif overlap <= size // 4:  # the overlap is real: at least half the configured tokens, at most all of them
        assert all(overlap / 2 <= s <= overlap for s in shared), shared
    else:  # an overlap near the chunk size: still shared, still progress
        assert all(1 <= s <= overlap for s in shared), shared
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert len({c.hash for c in chunks}) == len(chunks)


def test_chunks_end_at_paragraph_then_sentence_boundaries():
    paragraphs = [" ".join(f"Para{p} word{w}." if w % 6 == 5 else f"para{p}w{w}" for w in range(30)) for p in range(6)]
    text = "\n\n".join(paragraphs)
    spans = chunk_spans(text, size=70, overlap=0)
    # 35 tokens per paragraph: exactly two fit in 70, so every cut lands on a paragraph break.
    assert [text[:end].endswith("\n\n") for _, end in spans[:-1]] == [True] * (len(spans) - 1)
    assert [count_tokens(text[s:e]) for s, e in spans] == [70, 70, 70]

    one_paragraph = " ".join(paragraphs)
    spans = chunk_spans(one_paragraph, size=40, overlap=0)
    assert all(one_paragraph[:end].rstrip().endswith(".") for _, end in spans[:-1])


def test_a_markdown_heading_stays_with_its_section():
    text = ("Intro sentence number one here. " * 5).strip() + "\n\n## Section\n\n" + ("Body text of the section. " * 8)
    spans = chunk_spans(text, size=30, overlap=0)
    assert not text[: spans[0][1]].rstrip().endswith("## Section")


def test_a_run_without_any_boundary_is_cut_between_tokens():
    text = " ".join(f"w{i}" for i in range(250))
    spans = chunk_spans(text, size=100, overlap=20)
    assert [count_tokens(text[s:e]) for s, e in spans] == [100, 100, 90]
    assert all(text[s] == "w" for s, _ in spans)  # every chunk starts at a word


def test_leading_space_is_never_a_chunk_of_its_own():
    text = "\n\n" + " ".join(f"w{i}" for i in range(250))  # the only boundary is before the first word
    spans = chunk_spans(text, size=100, overlap=20)
    assert spans[0] == (0, text.index("w100")) and all(count_tokens(text[s:e]) for s, e in spans)


CHINESE_DOC = "\n\n".join(
    "".join(f"第{p}段的第{s}句话讲的是垃圾分类和资源回收的知识。" for s in range(1 + p % 4)) for p in range(30)
)


def test_cjk_text_counts_characters_and_cuts_after_chinese_sentence_marks():
    assert count_tokens("垃圾分类") == 4
    assert count_tokens("用 Python 写一个 script。") == 6  # 用 | Python | 写 一 个 | script。
    assert token_starts("ab 中文").tolist() == [0, 3, 4]
    doc = Document("分类.txt", CHINESE_DOC, Path("分类.txt"))
    chunks = chunk_document(doc, size=80, overlap=20)
    assert_chunk_invariants(CHINESE_DOC, chunks, 80, 20)
    assert all(c.text.rstrip().endswith("。") for c in chunks)
    assert all(c.text[0] == "第" for c in chunks)  # every chunk starts on a sentence
    assert all(c.byte_end - c.byte_start > c.end - c.start for c in chunks)  # multi-byte text


def reference_token_starts(text: str) -> list[int]:
    """The tokenizer's definition, one character at a time."""
    starts, run = [], 0
    for i, char in enumerate(text):
        if char.isspace() or is_cjk(char):
            run = 0
            if is_cjk(char):
                starts.append(i)
            continue
        if run % MAX_TOKEN_CHARS == 0:
            starts.append(i)
        run += 1
    return starts


_ANY_CHAR = st.characters(exclude_categories=("Cs",)) | st.sampled_from(" \n\t\u3000\u00a0中文한글カナ。，x")


@settings(max_examples=300, deadline=None)
@given(text=st.text(_ANY_CHAR, max_size=200) | st.builds(lambda n: "y" * n + " z", st.integers(0, 100)))
def test_token_starts_match_the_definition(text):
    assert token_starts(text).tolist() == reference_token_starts(text)


def test_every_bmp_character_tokenizes_as_the_definition_says():
    text = "".join(map(chr, range(0x10000)))
    assert token_starts(text).tolist() == reference_token_starts(text)


def test_a_run_without_spaces_counts_one_token_per_max_token_chars():
    assert count_tokens("x" * (2 * MAX_TOKEN_CHARS + 1)) == 3
    text = "see https://example.org/" + "a" * 100 + " now"
    spans = chunk_spans(text, size=2, overlap=1)
    assert all(e - s <= 2 * MAX_TOKEN_CHARS for s, e in spans)
    assert_chunk_invariants(text, chunk_document(Document("u", text, Path("u")), size=2, overlap=1), 2, 1)


def test_a_10mb_line_without_spaces_becomes_many_bounded_chunks():
    text = "basalt" * (10 * 1024 * 1024 // 6)
    chunks = chunk_document(Document("huge.txt", text, Path("huge.txt")), size=200, overlap=40)
    assert len(chunks) > 1000
    assert chunks[0].start == 0 and chunks[-1].end == len(text)
    assert all(c.tokens <= 200 and len(c.text) <= 200 * MAX_TOKEN_CHARS for c in chunks)
    assert all(a.start < b.start <= a.end for a, b in zip(chunks, chunks[1:]))


def test_a_5mb_document_chunks_like_a_small_one():
    """Chunking is linear: a document of 400 copies gives 400 times the chunks of one copy, each as sound as
    in a short document (how fast belongs in bench/, not in a test)."""
    unit = LONG_EN + "\n\n" + CHINESE_DOC + "\n\n"
    copies = 5 * 1024 * 1024 // len(unit.encode("utf-8"))
    text = unit * copies
    small = chunk_document(Document("u", unit, Path("u")), size=200, overlap=40)
    chunks = chunk_document(Document("big", text, Path("big")), size=200, overlap=40)
    assert_chunk_invariants(text, chunks, 200, 40)
    assert copies * (len(small) - 1) <= len(chunks) <= copies * (len(small) + 1)


def test_chunk_size_and_overlap_are_validated():
    with pytest.raises(ConfigError, match="overlap < size"):
        chunk_spans("a b c", size=10, overlap=10)
    with pytest.raises(ConfigError):
        chunk_spans("a b c", size=0, overlap=0)


_ALPHABET = st.sampled_from(list("ab cd. ef! gh? \n\n中文。字！词？，、😀é\t") + ["word ", "长句子", "\n", " 3.5 "])


@settings(max_examples=150, deadline=None)
@given(pieces=st.lists(_ALPHABET, min_size=1, max_size=300), size=st.integers(2, 40), data=st.data())
def test_span_invariants_hold_for_any_text(pieces, size, data):
    text = "".join(pieces)
    overlap = data.draw(st.integers(0, size - 1))
    if not text.strip():
        return
    chunks = chunk_document(Document("x", text, Path("x")), size=size, overlap=overlap)
    assert_chunk_invariants(text, chunks, size, overlap)


def test_the_seed_documents_chunk_cleanly_when_present():
    root = Path(__file__).resolve().parents[2] / "seeds" / "docs"
    if not root.is_dir():
        pytest.skip("seeds/docs not present")
    docs, skipped = load_documents(root)
    assert docs and skipped == []
    for doc in docs:
        chunks = chunk_document(doc, size=200, overlap=40)
        assert_chunk_invariants(doc.text, chunks, 200, 40)
        assert not re.search(r"\S", doc.text[chunks[-1].end :])


def test_module_lists_the_loaders_it_supports():
    assert set(documents.SUFFIXES) >= {".txt", ".md", ".html", ".jsonl", ".csv", ".tsv", ".pdf"}
