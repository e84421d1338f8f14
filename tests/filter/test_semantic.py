"""Embedding near-duplicates: exact pair search, union-find groups, and the bundled MiniLM on planted data.

Function-level tests check their own invariant (kept + dropped = all); the pipeline tests check
|in| = |curated| + |rejects| through `run_filtered`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from datagen.errors import ConfigError
from datagen.filter.pipeline import FilterConfig
from datagen.filter.semantic import (
    default_model_path,
    embed_dedup,
    encode,
    keep_greedy,
    keep_one_per_group,
    similar_pairs,
)
from datagen.records import Example
from tests.filter.test_pipeline import run_filtered

SEEDS = Path(__file__).resolve().parents[2] / "seeds"


def seed_instructions(name: str) -> list[str]:
    lines = (SEEDS / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["instruction"] for line in lines if line.strip()]


def check_partition(n: int, kept: list[int], dropped: list[tuple]) -> None:
    assert sorted(kept + [d[0] for d in dropped]) == list(range(n))
    assert all(d[1] in kept for d in dropped)  # a duplicate always points at a survivor


# ---------------------------------------------------------------------------------------------- no model


def _planted_vectors(n: int, dim: int, copies: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    for k in range(copies):  # row n-1-k is a slightly perturbed copy of row k
        vectors[n - 1 - k] = vectors[k] + 0.05 * rng.standard_normal(dim).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _brute_force(vectors: np.ndarray, threshold: float) -> set[tuple[int, int]]:
    sims = vectors @ vectors.T
    i, j = np.nonzero(np.triu(sims >= threshold, k=1))
    return set(zip(i.tolist(), j.tolist()))


@pytest.mark.parametrize("ivf_above", [100_000, 500])  # exact IndexFlatIP, then IndexIVFFlat
def test_similar_pairs_match_brute_force(ivf_above):
    vectors = _planted_vectors(3000, 32, copies=40)
    i, j, s = similar_pairs(vectors, 0.9, ivf_above=ivf_above, nprobe=1 << 10, chunk=700)
    assert set(zip(i.tolist(), j.tolist())) == _brute_force(vectors, 0.9)
    assert len(i) >= 40 and (i < j).all() and (s >= 0.9).all()
    np.testing.assert_allclose(s, (vectors[i] * vectors[j]).sum(axis=1), atol=1e-5)


def test_similar_pairs_edge_cases():
    one = _planted_vectors(1, 8, copies=0)
    assert all(len(a) == 0 for a in similar_pairs(one, 0.5))
    same = np.repeat(one, 3, axis=0)
    i, j, _ = similar_pairs(same, 1.0)  # identical vectors reach a threshold of exactly 1 (float slack aside)
    assert set(zip(i.tolist(), j.tolist())) <= {(0, 1), (0, 2), (1, 2)}


def test_groups_keep_exactly_one_member_by_priority():
    # 0~1, 1~2 (a chain), 3~4, 5 alone, 6~7~8 all pairwise
    i, j = [0, 1, 3, 6, 6, 7], [1, 2, 4, 7, 8, 8]
    kept, dropped = keep_one_per_group(9, i, j, priority=list(range(9)))
    check_partition(9, kept, dropped)
    assert kept == [0, 3, 5, 6]
    assert dropped == [(1, 0), (2, 0), (4, 3), (7, 6), (8, 6)]
    kept, dropped = keep_one_per_group(9, i, j, priority=[5, 1, 9, 2, 0, 0, 3, 3, 1])
    check_partition(9, kept, dropped)
    assert kept == [1, 4, 5, 8]
    # whatever the priorities, each connected group keeps exactly one member: never both sides of a pair
    groups = [{0, 1, 2}, {3, 4}, {5}, {6, 7, 8}]
    assert all(len(g & set(kept)) == 1 for g in groups)


def test_greedy_grouping_does_not_chain():
    # 0~1 (0.95), 1~2 (0.92) but 0 and 2 are not a pair: connected keeps 0; greedy keeps 0 and 2
    i, j, scores = [0, 1, 3], [1, 2, 4], [0.95, 0.92, 0.91]
    kept, dropped = keep_one_per_group(5, i, j, priority=list(range(5)))
    assert kept == [0, 3] and dropped == [(1, 0), (2, 0), (4, 3)]
    kept, dropped = keep_greedy(5, i, j, scores, priority=list(range(5)))
    check_partition(5, kept, dropped)
    assert kept == [0, 2, 3] and dropped == [(1, 0), (4, 3)]
    # with 1 first, both its neighbours go, each naming 1
    kept, dropped = keep_greedy(5, i, j, scores, priority=[1, 0, 2, 3, 4])
    assert kept == [1, 3] and dropped == [(0, 1), (2, 1), (4, 3)]


# ---------------------------------------------------------------------------------------------- bundled model

PARAPHRASES = [  # each group is one task said several ways (cosine >= 0.9 under all-MiniLM-L6-v2)
    ["Give three tips for staying healthy.", "What are three tips to stay healthy?"],
    ["List five countries in Europe.", "Name five European countries."],
    [
        "Write a haiku about autumn leaves.",
        "Compose a haiku about autumn leaves.",
        "Write a haiku about the autumn leaves.",
    ],
    ["What is the capital of France?", "Which city is the capital of France?"],
    ["Translate the sentence into French.", "Translate this sentence to French."],
    ["Explain how a rainbow forms.", "Describe how rainbows are formed."],
]
#: Close in topic or wording but different tasks: must never be merged.
HARD_NEGATIVES = [
    "Write a haiku about winter snow.",
    "What is the capital of Spain?",
    "List five countries in Asia.",
    "Explain how a volcano erupts.",
    "Translate the sentence into German.",
    "Give three reasons to learn a second language.",
]
#: Distinct Chinese tasks beyond the seed file, several on shared topics.
ZH_DISTINCT = [
    "写一首关于春天的诗。",
    "写一首关于大海的诗。",
    "解释光合作用的过程。",
    "计算两个数的和。",
    "列出三种常见的水果。",
    "给出健康饮食的建议。",
    "总结这篇文章的主要内容。",
    "介绍一下中国的首都。",
    "如何学习编程？",
    "描述你最喜欢的季节。",
    "把这句话翻译成英文。",
    "解释什么是通货膨胀。",
    "推荐三本适合中学生的书。",
    "比较猫和狗作为宠物的优缺点。",
]


def test_bundled_model_loads_offline_and_normalises():
    assert (default_model_path() / "model.safetensors").exists()
    vectors = encode(["Hello world.", "你好，世界。"])
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_planted_paraphrases_keep_one_per_group_and_distinct_tasks_stay():
    distinct = seed_instructions("seed_tasks.jsonl") + HARD_NEGATIVES
    texts = [t for group in PARAPHRASES for t in group] + distinct
    result = embed_dedup(texts, priority=list(range(len(texts))))
    check_partition(len(texts), result.kept, result.dropped)
    kept = {texts[k] for k in result.kept}
    assert all(len(kept & set(group)) == 1 for group in PARAPHRASES)
    assert set(distinct) <= kept  # no distinct pair merged
    assert len(result.dropped) == sum(len(g) - 1 for g in PARAPHRASES)
    assert all(score >= 0.9 for _, _, score in result.dropped)
    assert result.stats["groups"] == len(PARAPHRASES) and result.stats["largest_group"] == 3


def test_distinct_chinese_instructions_are_not_merged_at_the_default_settings():
    texts = seed_instructions("seed_tasks.zh.jsonl") + ZH_DISTINCT
    cfg = FilterConfig()
    result = embed_dedup(
        texts, priority=list(range(len(texts))), threshold=cfg.embed_threshold, max_unknown=cfg.embed_max_unknown
    )
    check_partition(len(texts), result.kept, result.dropped)
    assert result.dropped == [] and result.stats["unreadable"] == len(texts)


def test_why_unreadable_texts_are_not_compared():
    """MiniLM reads Chinese as mostly [UNK]: distinct instructions collapse, so no threshold keeps them apart."""
    texts = seed_instructions("seed_tasks.zh.jsonl") + ZH_DISTINCT
    vectors = encode(texts)
    sims = np.triu(vectors @ vectors.T, k=1)
    assert sims.max() > 0.99
    forced = embed_dedup(texts, priority=list(range(len(texts))), threshold=0.99, max_unknown=1.0)
    check_partition(len(texts), forced.kept, forced.dropped)
    assert forced.dropped  # distinct tasks merged: what the default max_unknown prevents
    # English with a few characters the model does not know is still compared
    mixed = ["Give three tips for staying healthy 🙂", "What are three tips to stay healthy? 🙂"]
    result = embed_dedup(mixed, priority=[0, 1])
    assert result.stats["unreadable"] == 0 and result.kept == [0]


def test_embedding_stage_in_the_pipeline_with_keep_policies(tmp_path):
    records = [
        Example(instruction="Give three tips for staying healthy.", output="Sleep, eat well, move."),
        Example(
            instruction="What are three tips to stay healthy?",
            output="Sleep seven to nine hours, eat plenty of vegetables, and walk for half an hour a day.",
        ),
        Example(instruction="写一首关于大海的诗。", output="蔚蓝的大海轻轻摇晃，浪花把月光揉成碎银。"),
        Example(instruction="解释什么是通货膨胀。", output="通货膨胀是指物价总体水平持续上涨、货币购买力下降的现象。"),
    ]
    for keep, winner, grouping in (
        ("first", 0, "connected"),
        ("longest_output", 1, "greedy"),
        ("heuristic_score", 1, "connected"),
    ):
        curated, rejects, stats = run_filtered(tmp_path, records, keep=keep, embed_grouping=grouping)
        assert [e.id for e in curated] == [records[i].id for i in sorted({winner, 2, 3})]
        assert len(rejects) == 1 and rejects[0].reject["stage"] == "embed_dedup"
        assert rejects[0].reject["reason"] == "embedding_near_duplicate"
        assert rejects[0].reject["duplicate_of"] == records[winner].id and rejects[0].reject["score"] >= 0.9
        assert stats["stages"]["embed_dedup"]["pairs"] == 1 and stats["stages"]["embed_dedup"]["unreadable"] == 2


def test_a_configured_model_path_is_used_and_a_bad_one_is_a_config_error(tmp_path):
    records = [
        Example(instruction="List five countries in Europe.", output="France, Spain, Italy, Austria, Malta."),
        Example(instruction="Name five European countries.", output="Norway, Greece, Ireland, Poland, Czechia."),
    ]
    curated, rejects, stats = run_filtered(tmp_path, records, embed_model=str(default_model_path()))
    assert len(curated) == 1 and len(rejects) == 1
    assert stats["stages"]["embed_dedup"]["model"] == str(default_model_path())
    with pytest.raises(ConfigError, match="filter.embed_model"):
        embed_dedup(["a", "b"], priority=[0, 1], model=str(tmp_path / "no-such-model"))
