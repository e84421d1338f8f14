"""The filter at size: greedy embedding groups, IVF recall, MinHash-LSH ROUGE-L, decontamination, --against.

Sets are small so the tests take seconds; ``rouge_lsh_above``/``rouge_method`` and ``embed_ivf_above`` force
the paths that large sets take by default.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from datagen.filter import minhash
from datagen.filter.decontaminate import NgramIndex
from datagen.filter.pipeline import FilterConfig, load_config
from datagen.filter.semantic import keep_greedy, keep_one_per_group, similar_pairs
from datagen.records import write_jsonl
from datagen.rouge import greedy_dedup, greedy_dedup_among, rouge_l, tokenize
from tests.filter.test_pipeline import NO_EMBED, ex, invoke, run_filtered

FIXTURES = Path(__file__).resolve().parent / "fixtures"


# ---------------------------------------------------------------------------------------------- embeddings


def _unit(deg: float) -> list[float]:
    return [np.cos(np.radians(deg)), np.sin(np.radians(deg))]


def test_greedy_grouping_is_the_default_and_does_not_chain():
    """A~B and B~C at or above 0.9, A~C below: greedy keeps A and C and drops B as A's duplicate."""
    vectors = np.array([_unit(0), _unit(20), _unit(40)], np.float32)  # cos 0.940, 0.940; A·C 0.766
    i, j, s = similar_pairs(vectors, 0.9)
    assert list(zip(i.tolist(), j.tolist())) == [(0, 1), (1, 2)]
    kept, dropped = keep_greedy(3, i, j, s, priority=[0, 1, 2])
    assert (kept, dropped) == ([0, 2], [(1, 0)])
    assert float(vectors[1] @ vectors[0]) >= 0.9
    assert keep_one_per_group(3, i, j, priority=[0, 1, 2]) == ([0], [(1, 0), (2, 0)])  # chaining, by name only
    assert FilterConfig().embed_grouping == "greedy"


def test_every_embedding_reject_is_at_or_above_the_threshold_to_a_kept_record(tmp_path):
    """With the bundled MiniLM: each embedding reject names a curated record and a cosine >= the threshold."""
    base = [
        "List five countries in Europe.",
        "Name five European countries.",
        "Give me five nations of Europe.",
        "Explain how photosynthesis works.",
        "Describe the process of photosynthesis.",
        "Write a haiku about autumn leaves.",
        "Compose a short haiku on falling autumn leaves.",
        "What is the capital of France?",
        "Which city is the capital of France?",
        "Sort these numbers: 3, 1, 2.",
    ]
    records = [ex(t, f"A complete and helpful answer number {k}.") for k, t in enumerate(base)]
    curated, rejects, stats = run_filtered(tmp_path, records, rouge_dedup=False, embed_threshold=0.8)
    kept_ids = {e.id for e in curated}
    embed = [r for r in rejects if r.reject["stage"] == "embed_dedup"]
    assert embed, "the planted paraphrases must be caught"
    for r in embed:
        assert r.reject["duplicate_of"] in kept_ids
        assert r.reject["score"] >= 0.8
        assert "against a kept record" in r.reject["detail"]
    assert stats["stages"]["embed_dedup"]["grouping"] == "greedy"


def test_ivf_index_reports_its_recall_against_exact_search():
    rng = np.random.default_rng(0)
    n, dim = 3000, 32
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    for k in range(60):
        vectors[n - 1 - k] = vectors[k] + 0.05 * rng.standard_normal(dim).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    sims = vectors @ vectors.T
    exact = set(zip(*(a.tolist() for a in np.nonzero(np.triu(sims >= 0.9, k=1)))))
    info: dict = {}
    i, j, _ = similar_pairs(vectors, 0.9, ivf_above=500, min_recall=0.99, info=info)
    found = set(zip(i.tolist(), j.tolist()))
    assert found <= exact
    assert len(found) >= 0.95 * len(exact)
    assert {"index", "ivf_recall", "ivf_nprobe", "flat_ms_per_query", "ivf_ms_per_query"} <= set(info)
    assert info["ivf_recall"] >= 0.99 or info["ivf_nprobe"] >= int(info["ivf_build_s"] >= 0)  # raised until met
    small: dict = {}
    similar_pairs(vectors[:400], 0.9, ivf_above=500, info=small)
    assert small == {"index": "flat", "recall": 1.0}


# ---------------------------------------------------------------------------------------------- MinHash-LSH


def synthetic(n: int, seed: int = 0) -> list[str]:
    """English and Chinese instructions from a Zipf vocabulary, a third of them near or exact copies."""
    rng = random.Random(seed)
    en = ["the", "a", "of", "to", "and", "in"] + [f"w{k}x" for k in range(3000)]
    zh = [chr(0x4E00 + k) for k in range(2000)]
    w_en = [1 / (k + 1) for k in range(len(en))]
    w_zh = [1 / (k + 1) for k in range(len(zh))]
    texts: list[tuple[str, list[str]]] = []
    out = []
    while len(out) < n:
        if texts and rng.random() < 0.33:
            lang, tokens = rng.choice(texts)
            tokens = list(tokens)
            tokens[rng.randrange(len(tokens))] = rng.choices(
                en if lang == "en" else zh, w_en if lang == "en" else w_zh
            )[0]
        else:
            lang = "zh" if rng.random() < 0.3 else "en"
            tokens = (
                rng.choices(en, w_en, k=rng.randint(6, 16))
                if lang == "en"
                else rng.choices(zh, w_zh, k=rng.randint(8, 20))
            )
            texts.append((lang, tokens))
        out.append("".join(tokens) + "。" if lang == "zh" else " ".join(tokens).capitalize() + ".")
    return out


def test_greedy_dedup_among_all_pairs_is_greedy_dedup():
    texts = synthetic(300)
    tokens = [tokenize(t) for t in texts]
    everything = [(i, j) for j in range(len(texts)) for i in range(j)]
    expected = greedy_dedup(texts, 0.7)
    assert expected[1], "the set must hold near-duplicates"
    assert greedy_dedup_among(tokens, 0.7, everything) == expected
    assert greedy_dedup_among(tokens, 0.7, [], exhaustive=[True] * len(texts)) == expected  # all pool-searched


def test_lsh_candidates_find_the_exact_pairs_on_english_and_chinese():
    texts = synthetic(1500, seed=1)
    tokens = [tokenize(t) for t in texts]
    kept, dropped = greedy_dedup(texts, 0.7)
    sketch = minhash.Sketch(tokens, max_df=0.05)
    pairs = np.array([(k, x) for x, k, _ in dropped], np.int64)
    recall = sketch.collides(pairs).mean()
    assert recall == 1.0
    assert any(not texts[x].isascii() for x, _, _ in dropped) and any(texts[x].isascii() for x, _, _ in dropped)
    candidates = sketch.pairs()
    assert len(candidates) < 20 * len(texts)  # bounded: no pair explosion on common words
    assert greedy_dedup_among(tokens, 0.7, candidates, exhaustive=sketch.few) == (kept, dropped)


def test_chinese_shingles_are_character_bigrams():
    assert sorted(minhash._grams(tokenize("写一首诗 about the sea"))) == [
        "about",
        "about the",
        "sea",
        "the",
        "the sea",
        "一首",
        "一首诗",
        "写一",
        "写一首",
        "诗 about",
        "首诗",
    ]
    a, b = "写一首关于大海和月亮的现代诗歌", "写一首关于大海和月光的现代诗歌"
    assert rouge_l(a, b) >= 0.7
    sketch = minhash.Sketch([tokenize(a), tokenize(b), tokenize("解释光合作用的基本原理和过程")], max_df=1.0)
    assert sketch.pairs().tolist() == [[0, 1]]


def test_pipeline_lsh_path_keeps_the_same_set_as_the_exact_path(tmp_path):
    records = [ex(t, f"A complete and helpful answer number {k}.") for k, t in enumerate(synthetic(600, seed=2))]
    exact_dir, lsh_dir = tmp_path / "exact", tmp_path / "lsh"
    exact_dir.mkdir(), lsh_dir.mkdir()
    curated_e, rejects_e, stats_e = run_filtered(exact_dir, records, **NO_EMBED, rouge_method="exact")
    curated_l, rejects_l, stats_l = run_filtered(lsh_dir, records, **NO_EMBED, rouge_lsh_above=0)
    assert stats_e["stages"]["rouge_dedup"]["method"] == "exact"
    assert stats_l["stages"]["rouge_dedup"]["method"] == "lsh"
    assert stats_e["stages"]["rouge_dedup"]["rejected"] > 50
    assert [e.id for e in curated_l] == [e.id for e in curated_e]
    assert [(r.id, r.reject.get("duplicate_of"), r.reject.get("score")) for r in rejects_l] == [
        (r.id, r.reject.get("duplicate_of"), r.reject.get("score")) for r in rejects_e
    ]


def test_rouge_method_is_validated():
    from datagen.errors import ConfigError

    with pytest.raises(ConfigError, match="rouge_method"):
        FilterConfig(rouge_method="fast")


# ---------------------------------------------------------------------------------------------- decontamination


EN_LEAK = (
    "Solve this: a train leaves the station at nine in the morning travelling at sixty miles per hour "
    "toward a big city."
)
EN_NEAR = "A bus leaves the station at nine in the morning travelling at sixty miles each hour."  # 12 shared words
ZH_LEAK = "窗户上为什么会结冰？答：在寒冷的冬天早晨，窗户玻璃的内侧常常会结出一层冰花。"
ZH_NEAR = "请解释为什么在寒冷的冬天早晨窗上会有水珠。"  # 12 shared characters


def test_decontamination_drops_planted_leaks_and_keeps_near_misses(tmp_path):
    """A 13-word (en) or 13-character (zh) span shared with a benchmark item is a leak; 12 is not."""
    records = [
        ex(EN_LEAK, "It arrives around noon."),
        ex("请回答下面这道题。", output="一道题：下列哪一项最能说明为什么在寒冷的冬天早晨，窗户会起雾。"),
        ex(EN_NEAR, "About three hours later."),
        ex(ZH_NEAR, output="因为室内温暖潮湿的空气碰到冰冷的玻璃，水汽就凝结成了水珠。"),
        ex("Explain why kettles whistle.", "Steam escapes through a narrow spout and the air vibrates."),
    ]
    bench = [FIXTURES / "bench_like_en.jsonl", FIXTURES / "bench_like_zh.jsonl"]
    curated, rejects, stats = run_filtered(tmp_path, records, **NO_EMBED, decontaminate=bench)
    assert {r.instruction for r in rejects} == {EN_LEAK, "请回答下面这道题。"}
    by_item = {r.reject["benchmark_item"]: r.reject for r in rejects}
    assert set(by_item) == {"en-001", "zh-002"}
    en, zh = by_item["en-001"], by_item["zh-002"]
    assert en["reason"] == "benchmark_overlap" and en["stage"] == "decontaminate"
    assert en["benchmark"].endswith("bench_like_en.jsonl") and en["field"] == "instruction"
    assert len(en["span"].split()) == 13 and en["span"] in EN_LEAK.lower()
    assert zh["field"] == "output" and len(zh["span"]) == 13 and zh["benchmark"].endswith("bench_like_zh.jsonl")
    assert "en-001" in en["detail"] and en["span"] in en["detail"]
    assert stats["stages"]["decontaminate"]["benchmark_items"] == 6


def test_decontamination_ngram_is_configurable_from_yaml(tmp_path):
    config = tmp_path / "f.yaml"
    config.write_text(f"filter:\n  decontaminate: [{FIXTURES / 'bench_like_en.jsonl'}]\n  decontaminate_ngram: 8\n")
    cfg = load_config(config)
    assert cfg.decontaminate_ngram == 8 and cfg.decontaminate == (FIXTURES / "bench_like_en.jsonl",)
    _, rejects, _ = run_filtered(
        tmp_path,
        [ex(EN_NEAR, "About three hours later.")],
        **NO_EMBED,
        decontaminate=cfg.decontaminate,
        decontaminate_ngram=8,
    )
    assert [r.reject["benchmark_item"] for r in rejects] == ["en-001"]  # 12 shared words >= 8
    _, rejects, _ = run_filtered(
        tmp_path, [ex(EN_NEAR, "About three hours later.")], **NO_EMBED, decontaminate=cfg.decontaminate
    )
    assert rejects == []  # 12 < 13


def test_short_benchmark_items_are_not_checked():
    index = NgramIndex(13)
    index.add_text("Yes or no?", "b.jsonl", "short")
    assert index.find("Yes or no? Tell me more about it, please, in many many words here.") is None


# ---------------------------------------------------------------------------------------------- --against


def test_against_drops_only_what_is_in_the_old_set(tmp_path):
    old = tmp_path / "old.jsonl"
    write_jsonl(
        old, [ex("Give three tips for staying healthy.", "Eat well."), ex("Name the largest ocean.", "Pacific.")]
    )
    new = [
        ex("give three tips for staying healthy", "Sleep more and walk daily."),  # same prompt
        ex("Name the largest ocean on Earth.", "The Pacific Ocean."),  # ROUGE-L near copy
        ex("Describe how a rainbow forms.", "Sunlight is refracted in raindrops."),
    ]  # new
    curated, rejects, stats = run_filtered(tmp_path, new, **NO_EMBED, against=(old,))
    assert [e.instruction for e in curated] == ["Describe how a rainbow forms."]
    old_ids = [json.loads(line)["id"] for line in old.read_text().splitlines()]
    assert [(r.reject["stage"], r.reject["duplicate_of"]) for r in rejects] == [
        ("against", old_ids[0]),
        ("against", old_ids[1]),
    ]
    assert stats["stages"]["against"]["earlier_records"] == 2 and stats["records_in"] == 3


def test_cli_against_option(tmp_path):
    old, new, out = tmp_path / "old.jsonl", tmp_path / "new.jsonl", tmp_path / "out"
    write_jsonl(old, [ex("Name the largest ocean.", "Pacific.")])
    rainbow = ex(
        "Describe how a rainbow forms.", "Sunlight bends and reflects inside raindrops and splits into colours."
    )
    write_jsonl(new, [ex("Name the largest ocean on Earth.", "Pacific."), rainbow])
    result = invoke("filter", new, "--out", out, "--no-embed-dedup", "--against", old)
    assert result.exit_code == 0, result.output
    assert "kept 1 of 2 records" in result.output
