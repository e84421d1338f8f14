"""Shared helpers of the reliability suite: a scripted model for every prompt `datagen run` sends, run configs,
subprocess runners and checks that apply to a whole run folder.

The scripted model answers deterministically from the request alone (never from call order), so a run against
a faulty endpoint, a killed-and-resumed run and a clean run must end with byte-identical records.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.generate.test_self_instruct import scripted
from tests.plugins.faults import MODEL_ID

REPO = Path(__file__).resolve().parents[2]
SEEDS = str(REPO / "seeds" / "seed_tasks.jsonl")
KG = str(REPO / "seeds" / "kg" / "plants.tsv")

# Self-QA prompts carry the chunk after "Text:" / "文本：" and before the instruction line.
_CHUNK = re.compile(r"(?:^|\n)(?:Text|文本)[:：] ?(.*?)\n\n(?:Write|Question|请针对|问题)", re.DOTALL)
_QUESTION = re.compile(r"^(?:Question|问题)[:：]\s*(.+)$", re.MULTILINE)
_WORD = re.compile(r"[A-Za-z]{5,}")
_SENTENCE = re.compile(r"(?<=[.!?。！？])\s*")


def _sentences(chunk: str) -> list[str]:
    text = re.sub(r"^[#\s*-]+", "", chunk).strip()
    return [s.strip() for s in _SENTENCE.split(text) if len(s.split()) >= 4 or re.search(r"[\u4e00-\u9fff]{6}", s)]


def qa_answer(kind: str, body: dict[str, Any]) -> str | None:
    """What a decent model says to a Self-QA prompt (None for any other prompt).

    Questions: one per sentence of the chunk, built from its words ("What is true of <first words>?"), so they
    stand alone and are grounded. Answers: the sentence the question was built from, verbatim.
    """
    if kind != "chat":
        return None
    prompt = body["messages"][-1]["content"]
    match = _CHUNK.search(prompt)
    if match is None:
        return None
    chunk = match.group(1)
    sentences = _sentences(chunk) or [chunk.strip()]
    if "new questions" in prompt:
        return "Here you go:\n" + "\n".join(
            f"{i}. What is true of {' '.join(s.split()[:5]).rstrip('.,;:')}?" for i, s in enumerate(sentences[:4], 1)
        )
    if "个新问题" in prompt:
        return "\n".join(f"{i}. {s[:10]}是什么？" for i, s in enumerate(sentences[:4], 1))
    question = _QUESTION.search(prompt)
    asked = question.group(1) if question else ""
    for sentence in sentences:
        head = " ".join(sentence.split()[:5]).rstrip(".,;:")
        if (head and head in asked) or (sentence[:10] and sentence[:10] in asked):
            return sentence
    return sentences[0]


def responder():
    """Self-Instruct's scripted model (tests/generate/test_self_instruct.py) plus Self-QA's prompts."""
    base = scripted()

    def respond(kind: str, body: dict[str, Any]) -> Any:
        answer = qa_answer(kind, body)
        return answer if answer is not None else base(kind, body)

    return respond


def write_config(path: Path, out_dir: Path, url: str, cache: Path, name: str = "r", **sections: Any) -> Path:
    """A `datagen run` config against ``url``; ``sections`` are added as they are (None drops one)."""
    endpoint = {
        "base_url": url,
        "model": MODEL_ID,
        "cache_path": str(cache),
        "backoff_base": 0.01,
        "backoff_max": 0.05,
        "retry_after_max": 0.05,
        "timeout": 1.0,
    }
    config: dict[str, Any] = {"name": name, "out_dir": str(out_dir), "endpoint": endpoint}
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        elif value is not None:
            config[key] = value
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


def datagen_cmd(*args: Any) -> list[str]:
    return [sys.executable, "-m", "datagen", *map(str, args)]


def subprocess_env(home: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("OPENAI_") and k not in ("DATAGEN_API_KEY", "DATAGEN_BASE_URL", "DATAGEN_DEBUG")
    }
    env.update(
        DATAGEN_HOME=str(home),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def run_datagen(
    *args: Any, env: dict[str, str], timeout: float = 120, cwd: Path = REPO
) -> subprocess.CompletedProcess:
    return subprocess.run(datagen_cmd(*args), env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def assert_no_torn_jsonl(root: Path) -> int:
    """Every line of every .jsonl under ``root`` (state logs included) is one whole JSON value; returns the count."""
    lines = 0
    for path in sorted(root.rglob("*.jsonl")):
        data = path.read_bytes()
        assert not data or data.endswith(b"\n"), f"{path}: last line is not terminated (torn write)"
        for number, raw in enumerate(data.split(b"\n")[:-1], start=1):
            if raw.strip():
                try:
                    json.loads(raw)
                except ValueError as exc:
                    raise AssertionError(f"{path}:{number}: not JSON ({exc}): {raw[:120]!r}") from None
                lines += 1
    return lines
