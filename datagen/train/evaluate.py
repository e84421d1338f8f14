"""Score the base and the tuned model on held-out records: ROUGE, loss, perplexity, side-by-side samples.

    datagen eval --adapter outputs/sft/adapter --data outputs/sft/eval.jsonl --out outputs/sft/eval
    datagen eval --base embedded --data heldout.jsonl --max-samples 50 --out eval-base/   # base model alone

Each record's last assistant reply is the reference; everything before it is the prompt. Both models answer
greedily in batches (``LocalBackend``: left-padded, 35-50 tokens/s at batch 8-16 on 2 CPU cores). Scores:

- ROUGE-1/2/L precision, recall and F, averaged over samples: ``rouge_score``'s arithmetic (no stemming) on
  the CJK-aware tokens of ``datagen.rouge.tokenize``, so English scores equal ``rouge_score``'s and
  Chinese or Japanese ones are not 0 (its tokenizer deletes every CJK character);
- loss: mean negative log-likelihood per reference token given the prompt (the reply and its end-of-turn
  token, labelled exactly as in training), and perplexity = exp(loss);
- the relative improvement of the tuned model over the base: ``(tuned - base) / base`` for ROUGE, and
  ``(base - tuned) / base`` for loss and perplexity, so positive is better for every metric.

OUT receives ``eval.json`` (scores), ``samples.jsonl`` and ``samples.md`` (base | tuned | reference).
"""

from __future__ import annotations

import gc
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rapidfuzz.distance import LCSseq

from datagen.config import check_fields
from datagen.errors import ConfigError
from datagen.formats import read_any
from datagen.records import write_atomic, write_json, write_jsonl
from datagen.rouge import tokenize  # one definition of a ROUGE token for the whole project (CJK-aware)
from datagen.train.config import adapter_train_config
from datagen.train.data import Collator, build_rows, resolve_chat_template
from datagen.train.distributed import is_main_process

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


@dataclass(frozen=True)
class EvalConfig:
    """What ``datagen eval`` compares and how."""

    base: str | None = None  # None: the base the adapter was trained on (its train_config.json), else "embedded"
    adapter: Path | None = None  # a LoRA adapter folder; None scores the base model alone
    max_samples: int | None = 100  # score the first N records; None: all
    max_new_tokens: int = 128  # generation budget per answer
    batch_size: int = 16  # rows per generate / loss batch (8-16 is the CPU sweet spot)
    max_seq_len: int = 1024  # prompt + reference tokens kept for the loss

    def __post_init__(self) -> None:
        if self.adapter is not None and not (Path(self.adapter) / "adapter_config.json").is_file():
            raise ConfigError(f"eval.adapter: {self.adapter} is not a folder with adapter_config.json")
        checks = [
            ("max_samples", self.max_samples is None or self.max_samples >= 1, "an integer >= 1 or null"),
            ("max_new_tokens", self.max_new_tokens >= 1, "an integer >= 1"),
            ("batch_size", self.batch_size >= 1, "an integer >= 1"),
            ("max_seq_len", self.max_seq_len >= 16, "an integer >= 16"),
        ]
        check_fields(self, "eval.", checks)


def evaluate(data: str | Path, out: str | Path, cfg: EvalConfig) -> dict[str, Any]:
    """Generate with the base (and tuned) model on ``data``, score against the references; returns ``eval.json``."""
    from datagen.llm.local import DecodingParams, LocalBackend, resolve_model_dir

    out = Path(out)
    examples = read_any(data)
    if cfg.max_samples is not None:
        examples = examples[: cfg.max_samples]
    if not examples:
        raise ConfigError(f"{data}: no records to evaluate")
    conversations = [e.conversation() for e in examples]
    cuts = [max(i for i, m in enumerate(c) if m["role"] == "assistant") for c in conversations]
    prompts = [c[:cut] for c, cut in zip(conversations, cuts)]
    references = [c[cut]["content"] for c, cut in zip(conversations, cuts)]
    trained = adapter_train_config(cfg.adapter) if cfg.adapter else {}
    base = cfg.base or trained.get("base") or "embedded"
    model_dir = resolve_model_dir(base)

    report: dict[str, Any] = {
        "data": str(data),
        "samples": len(examples),
        "base": base,
        "adapter": str(cfg.adapter) if cfg.adapter else None,
    }
    answers: dict[str, list[str]] = {}
    for name, adapter in [("base", None), ("tuned", cfg.adapter)][: 2 if cfg.adapter else 1]:
        backend = LocalBackend(model_dir, adapter, max_batch_size=cfg.batch_size)
        # Both models render with the template the adapter was trained with.
        template = resolve_chat_template(
            backend.tokenizer, trained.get("chat_template"), trained.get("fallback_template", "chatml")
        )
        backend.tokenizer.chat_template = template.text
        params = DecodingParams(temperature=0, max_tokens=cfg.max_new_tokens)
        answers[name] = [choices[0].text for choices in backend.chat([(p, params) for p in prompts])]
        loss, tokens = reference_loss(backend.model, backend.tokenizer, conversations, template, cfg)
        report[name] = {
            **mean_rouge(answers[name], references),
            "loss": loss,
            "perplexity": math.exp(loss) if loss is not None else None,
            "reference_tokens": tokens,
        }
        del backend
        gc.collect()
    if cfg.adapter:
        report["improvement"] = _improvement(report["base"], report["tuned"])

    rows = [
        {
            "id": example.id,
            "prompt": prompts[i],
            "reference": references[i],
            **{name: answers[name][i] for name in answers},
        }
        for i, example in enumerate(examples)
    ]
    if not is_main_process():  # launched on several processes, each scored the same records: one writes
        return report
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "samples.jsonl", rows)
    write_atomic(out / "samples.md", _markdown(rows, report))
    write_json(out / "eval.json", report)
    return report


def reference_loss(
    model: Any, tokenizer: Any, conversations: list[list[dict[str, str]]], template: Any, cfg: EvalConfig
) -> tuple[float | None, int]:
    """(mean NLL per reference token, reference tokens): the last reply of each conversation,
    labelled as in training."""
    import torch

    rows, _ = build_rows(tokenizer, conversations, template, cfg.max_seq_len, assistant_turns="last")
    collate = Collator(pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
    total, count = 0.0, 0
    device = next(model.parameters()).device
    with torch.inference_mode():
        for start in range(0, len(rows), cfg.batch_size):
            batch = {k: v.to(device) for k, v in collate(rows[start : start + cfg.batch_size]).items()}
            labels = batch.pop("labels")
            logits = model(**batch, use_cache=False).logits[:, :-1].float()
            targets = labels[:, 1:]
            nll = torch.nn.functional.cross_entropy(
                logits.transpose(1, 2), targets, ignore_index=-100, reduction="sum"
            )
            total += float(nll)
            count += int((targets != -100).sum())
    return (total / count if count else None), count


def rouge_scores(reference: str, prediction: str) -> dict[str, dict[str, float]]:
    """ROUGE-1/2/L precision, recall and F of ``prediction`` against ``reference``.

    ``rouge_score``'s formulas (``_score_ngrams``, ``_score_lcs``, ``scoring.fmeasure``) over the tokens of
    ``datagen.rouge.tokenize``: its tokens for non-CJK text, one token per CJK character.

    >>> rouge_scores("猫坐在垫子上", "猫在垫子上")["rougeL"]  # LCS 猫在垫子上 = 5 of 6 and of 5 characters
    {'precision': 1.0, 'recall': 0.8333333333333334, 'fmeasure': 0.9090909090909091}
    """
    target, pred = tokenize(reference), tokenize(prediction)
    scores = {}
    for rouge_type, n in (("rouge1", 1), ("rouge2", 2)):
        t = Counter(tuple(target[i : i + n]) for i in range(len(target) - n + 1))
        p = Counter(tuple(pred[i : i + n]) for i in range(len(pred) - n + 1))
        overlap = sum((t & p).values())
        scores[rouge_type] = _score(overlap / max(p.total(), 1), overlap / max(t.total(), 1))
    lcs = LCSseq.similarity(target, pred) if target and pred else 0  # rapidfuzz takes lists of hashables
    scores["rougeL"] = _score(lcs / len(pred), lcs / len(target)) if target and pred else _score(0.0, 0.0)
    return scores


def _score(precision: float, recall: float) -> dict[str, float]:
    fmeasure = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": precision, "recall": recall, "fmeasure": fmeasure}


def mean_rouge(predictions: list[str], references: list[str]) -> dict[str, dict[str, float]]:
    """Mean ROUGE precision/recall/F over samples (see ``rouge_scores``)."""
    scores = [rouge_scores(reference, prediction) for prediction, reference in zip(predictions, references)]
    n = max(1, len(predictions))
    return {t: {k: sum(s[t][k] for s in scores) / n for k in ("precision", "recall", "fmeasure")} for t in ROUGE_TYPES}


def _improvement(base: dict[str, Any], tuned: dict[str, Any]) -> dict[str, float | None]:
    """Relative change, signed so that positive is better: ROUGE up, loss and perplexity down."""

    def rel(before: float | None, after: float | None, higher_is_better: bool) -> float | None:
        if before is None or after is None or before == 0:
            return None
        return (after - before) / before if higher_is_better else (before - after) / before

    out = {
        f"{t}_{k}": rel(base[t][k], tuned[t][k], True)
        for t in ROUGE_TYPES
        for k in ("precision", "recall", "fmeasure")
    }
    return out | {k: rel(base[k], tuned[k], False) for k in ("loss", "perplexity")}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "<br>") or " "


def _markdown(rows: list[dict[str, Any]], report: dict[str, Any]) -> str:
    models = ["base", "tuned"] if rows and "tuned" in rows[0] else ["base"]
    lines = [f"# Eval: {report['data']}", ""]
    header = "| | ROUGE-1 F | ROUGE-2 F | ROUGE-L F | loss | perplexity |"
    lines += [header, "|---|---|---|---|---|---|"]
    for name in models:
        s = report[name]
        loss = f"{s['loss']:.4f}" if s["loss"] is not None else "-"
        ppl = f"{s['perplexity']:.2f}" if s["perplexity"] is not None else "-"
        lines.append(
            f"| {name} | {s['rouge1']['fmeasure']:.4f} | {s['rouge2']['fmeasure']:.4f} | "
            f"{s['rougeL']['fmeasure']:.4f} | {loss} | {ppl} |"
        )
    lines.append("")
    for i, row in enumerate(rows, 1):
        prompt = row["prompt"][-1]["content"] if row["prompt"] else ""
        lines += [f"## {i}. `{row['id']}`", "", f"**Prompt:** {_cell(prompt)}", ""]
        columns = [*models, "reference"]
        lines += [
            "| " + " | ".join(columns) + " |",
            "|" + "---|" * len(columns),
            "| " + " | ".join(_cell(row[c]) for c in columns) + " |",
            "",
        ]
    return "\n".join(lines) + "\n"
