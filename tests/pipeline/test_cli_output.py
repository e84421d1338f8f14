"""What the CLI prints: each stage's end line (also with zero records), inspect on a rejects file, no library noise."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import yaml
from click.testing import CliRunner

from datagen.cli import cli
from datagen.records import Example, write_jsonl
from tests.generate.test_self_instruct import scripted
from tests.plugins.faults import MODEL_ID


def _config(tmp_path, url, **self_instruct):
    config = {
        "name": "t",
        "out_dir": str(tmp_path / "outputs"),
        "endpoint": {"base_url": url, "model": MODEL_ID, "cache_path": str(tmp_path / "cache.sqlite")},
        "self_instruct": {
            "seeds": "seeds/seed_tasks.jsonl",
            "num_instructions": 2,
            "batch_size": 2,
            "classifier_eval_seeds": 0,
            **self_instruct,
        },
        "self_kg": {"graph": "seeds/kg/plants.tsv", "num": 2},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_stage_with_zero_records_ends_with_a_line_saying_so(fault_server, tmp_path):
    garbage = "I am not sure what you mean."  # no instance parses: every task is rejected
    fault_server.responder = scripted(
        extra={"Come up with examples": garbage, "Given the classification task definition": garbage}
    )
    result = CliRunner().invoke(
        cli, ["run", str(_config(tmp_path, fault_server.url, max_rounds=2))], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "outputs" / "t"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    stage = manifest["stages"]["self_instruct"]
    assert stage["kept"] == 0 and stage["rejected"] > 0
    line = next(l for l in result.output.splitlines() if l.startswith("self_instruct: done"))
    assert re.fullmatch(
        rf"self_instruct: done in \d+\.\d s: {stage['rejected']} records in, 0 kept, "
        rf"{stage['rejected']} rejected; {stage['llm']['requests']} LLM calls.*, [\d,]+ \+ [\d,]+ tokens; "
        rf"wrote {re.escape(str(run_dir / 'self_instruct'))}",
        line,
    ), line
    kg = manifest["stages"]["self_kg"]
    assert (
        "self_kg: done in" in result.output and f"{kg['kept']} kept, {kg['rejected']} rejected; wrote" in result.output
    )
    assert result.output.index("self_instruct: running") < result.output.index(line)


def test_inspect_groups_a_rejects_file_by_reason(tmp_path):
    rows = (
        [
            Example(
                instruction=f"Describe topic {i}.",
                output="Yes.",
                reject={"stage": "heuristics", "reason": "too_short_output", "detail": "1 word(s)"},
            )
            for i in range(4)
        ]
        + [
            Example(
                instruction="Translate it.",
                output="",
                reject={"stage": "heuristics", "reason": "empty_output", "detail": None},
            )
        ]
        + [
            Example(
                instruction=f"Write a poem {i}.",
                output="Roses are red.",
                reject={"stage": "rouge", "reason": "rouge_duplicate", "detail": {"of": "dg-1", "rouge_l": 0.9}},
            )
            for i in range(2)
        ]
    )
    path = tmp_path / "rejects.jsonl"
    write_jsonl(path, rows)
    result = CliRunner().invoke(cli, ["inspect", str(path)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "rejects by reason (3 reasons):" in out
    blocks = re.findall(r"^    (\w+): (\d+) \((\w+)\)$", out, re.M)
    assert blocks == [
        ("too_short_output", "4", "heuristics"),
        ("rouge_duplicate", "2", "rouge"),
        ("empty_output", "1", "heuristics"),
    ]  # commonest first, each with the stage that applied it
    assert "instruction: Describe topic 0." in out and "answer: Yes." in out and "detail: 1 word(s)" in out
    assert 'detail: {"of": "dg-1", "rouge_l": 0.9}' in out and "answer: (empty)" in out
    assert out.count("instruction: ") == 3  # one example per reason, not the random samples


_NOISE = r"""
import logging, sys, warnings
from datagen.cli import cli
cli(sys.argv[1:], standalone_mode=False)
logging.getLogger("bitsandbytes.backends.cpu.ops").warning(
    "Failed to load CPU gemm_4bit_forward from kernels-community: no kernels. Please make sure you already "
    "`pip install kernels` and the kernels >= 0.11.1")
logging.getLogger("transformers.generation.utils").warning("Setting `pad_token_id` to `eos_token_id`")
warnings.warn_explicit(
    "`resume_download` is deprecated", FutureWarning, "lib.py", 1, module="huggingface_hub.file_download")
logging.getLogger("datagen.filter").warning("OUR WARNING: 3 records had no output")
warnings.warn_explicit("OUR FUTURE WARNING", FutureWarning, "datagen/x.py", 1, module="datagen.x")
from huggingface_hub.utils import are_progress_bars_disabled  # transformers' "Loading weights" bar follows it
print(f"library bars off: {are_progress_bars_disabled()}", file=sys.stderr)
"""


@pytest.mark.parametrize("verbose", [False, True])
def test_library_noise_is_hidden_unless_verbose_and_ours_never(tmp_path, verbose):
    data = tmp_path / "d.jsonl"
    write_jsonl(data, [Example(instruction="a", output="b")])
    args = [sys.executable, "-c", _NOISE, *(["-v"] if verbose else []), "inspect", str(data)]
    done = subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=60,
        env={
            k: v for k, v in os.environ.items() if not k.endswith("_VERBOSITY") and k != "HF_HUB_DISABLE_PROGRESS_BARS"
        },
    )
    assert done.returncode == 0, done.stderr
    noise = ("gemm_4bit_forward", "pad_token_id", "resume_download")
    assert all((text in done.stderr) == verbose for text in noise), done.stderr
    assert "OUR WARNING: 3 records had no output" in done.stderr and "OUR FUTURE WARNING" in done.stderr
    assert f"library bars off: {not verbose}" in done.stderr
