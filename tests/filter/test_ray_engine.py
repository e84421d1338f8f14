"""``filter.engine: ray`` keeps what ``engine: local`` keeps, against a local Ray instance the tests start.

The fixture (``fixtures/ray_engine_dups.jsonl``) plants, in English and Chinese: exact duplicates (case, width
and punctuation folded; one group of three), ROUGE-L near-duplicates, embedding paraphrases (MiniLM cosine
0.91-0.95), one Self-Instruct task with two instances (one unit) and a near-copy of it, a record the heuristics
drop, and two greedy chains (en-05 ~ en-06 ~ en-07, zh-01 ~ zh-03 ~ zh-04, first and last below 0.7): the last
of each chain stays, because it only pairs with a dropped record. A connected-components shortcut would drop it;
the engine's greedy pass inside each component must not.

Marked ``ray``: skipped where the [ray] extra is not installed (``pip install 'datagen[ray]'``).
"""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import pytest

from datagen.errors import ConfigError
from datagen.filter.pipeline import FilterConfig, run_filter
from datagen.records import read_examples

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "ray_engine_dups.jsonl"

needs_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None,
    reason="Ray is not installed: pip install 'datagen[ray]' (the [ray] extra)",
)


@pytest.fixture(scope="module")
def local_ray():
    import ray
    from ray.data import DataContext
    from ray.data.context import ShuffleStrategy

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    context = DataContext.get_current()
    strategy, context.shuffle_strategy = context.shuffle_strategy, ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    try:  # Ray's default hash shuffle starts aggregator actors for every group-by: 4-8 s each here, 0.2 s sorted
        yield
    finally:
        context.shuffle_strategy = strategy
        ray.shutdown()


def filtered(out: Path, **overrides) -> tuple[list[str], dict[str, tuple], dict]:
    """Run the filter on the fixture; the kept ids (in order), each reject's outcome by id, and the stats."""
    stats = asyncio.run(run_filter(FilterConfig(inputs=(FIXTURE,), out=out, **overrides)))
    kept = [e.id for e in read_examples(out / "curated.jsonl")]
    rejects = {
        e.id: (
            e.reject["stage"],
            e.reject["reason"],
            e.reject.get("duplicate_of"),
            e.reject.get("score"),
            e.reject["detail"],
        )
        for e in read_examples(out / "rejects.jsonl")
    }
    return kept, rejects, stats


@pytest.mark.ray
@needs_ray
def test_ray_engine_keeps_what_the_local_engine_keeps(tmp_path, local_ray):
    local_kept, local_rejects, _ = filtered(tmp_path / "local")
    ray_kept, ray_rejects, stats = filtered(tmp_path / "ray", engine="ray")

    assert ray_kept == local_kept
    assert ray_rejects == local_rejects  # stage, reason, duplicate_of, score and the detail naming the kept record
    # The fixture plants what it says, so the comparison covers every dedup stage in both languages.
    reasons = {rid: (stage, dup) for rid, (stage, _, dup, _, _) in local_rejects.items()}
    assert reasons == {
        "en-02": ("exact_dedup", "en-01"),
        "en-18": ("exact_dedup", "en-01"),
        "zh-02": ("exact_dedup", "zh-01"),
        "zh-09": ("exact_dedup", "zh-08"),
        "en-03": ("rouge_dedup", "en-01"),
        "en-06": ("rouge_dedup", "en-05"),
        "en-11": ("rouge_dedup", "en-10"),
        "en-14": ("rouge_dedup", "en-12"),
        "zh-03": ("rouge_dedup", "zh-01"),
        "zh-06": ("rouge_dedup", "zh-05"),
        "en-04": ("embed_dedup", "en-01"),
        "en-09": ("embed_dedup", "en-08"),
        "en-17": ("heuristics", None),
    }
    assert {"en-07", "zh-04", "en-12", "en-13"} <= set(ray_kept)  # chain ends stay; a task's instances stay together
    assert stats["stages"]["rouge_dedup"]["engine"] == "ray" and stats["stages"]["rouge_dedup"]["method"] == "exact"
    assert stats["stages"]["rouge_dedup"]["largest_component"] == 3  # a chain is one component
    assert stats["stages"]["embed_dedup"]["engine"] == "ray" and stats["stages"]["embed_dedup"]["pairs"] == 2
    assert stats["config"]["engine"] == "ray"


@pytest.mark.ray
@needs_ray
def test_ray_lsh_path_keeps_what_the_local_lsh_path_keeps(tmp_path, local_ray):
    """MinHash signatures as a map and LSH buckets as a group-by, verified pairs, greedy per component.
    Without the heuristics "Hi." reaches the ROUGE-L stage: one shingle, too few for LSH, so it is searched
    against every text (``pool_searched``), as the local LSH path does."""
    cheap = {"embed_dedup": False, "rouge_method": "lsh", "heuristics": False}
    local_kept, local_rejects, _ = filtered(tmp_path / "local", **cheap)
    ray_kept, ray_rejects, stats = filtered(tmp_path / "ray", engine="ray", **cheap)

    assert (ray_kept, ray_rejects) == (local_kept, local_rejects)
    rouge = stats["stages"]["rouge_dedup"]
    assert rouge["method"] == "lsh" and rouge["candidate_pairs"] >= rouge["verified_pairs"] == 8
    assert rouge["pool_searched"] == 1 and "en-17" in ray_kept
    assert sum(stage == "rouge_dedup" for stage, *_ in ray_rejects.values()) == 6


def test_engine_and_address_are_checked():
    with pytest.raises(ConfigError, match="filter.engine must be one of"):
        FilterConfig(engine="spark")
    with pytest.raises(ConfigError, match="filter.ray_address"):
        FilterConfig(engine="ray", ray_address="")
    assert FilterConfig(engine="ray", ray_address="ray://head:10001").ray_address == "ray://head:10001"
