"""Records → chat template → tokens → labels → packed rows: everything the trainer feeds the model.

    examples = read_any("curated.jsonl")                      # alpaca, sharegpt, messages, seed, HF ...
    template = resolve_chat_template(tokenizer, None, "chatml")
    rows, stats = build_rows(tokenizer, [e.conversation() for e in examples], template, max_seq_len=1024)
    packed = pack_rows(rows, 1024)                            # best-fit decreasing, position_ids restart
    batch = Collator(pad_id=tokenizer.pad_token_id)(packed[:8])
    print(show_labels(tokenizer, rows[0]))                    # trained tokens in green

``input_ids`` and ``labels`` are built together, turn by turn, as trl's ``_prepare_dataset`` does: for each
assistant turn the conversation is rendered up to the turn (with the generation prompt) and through it, the
first must be a token prefix of the second, and the tokens in between are the reply. Labels are -100 on
everything but replies; each reply is trained through its end-of-turn token (``<|im_end|>`` in ChatML), so
the model learns to stop, and what a template adds after that token (ChatML's newline) is not trained.

Packing puts several rows in one sequence of at most ``max_seq_len`` tokens. ``position_ids`` restart at 0
for each sample and the collator passes no ``attention_mask``: transformers then derives a block-diagonal
causal mask from the restarts (``masking_utils.find_packed_sequence_indices``, sdpa and eager alike; flash
attention reads the same restarts as varlen boundaries), so packed samples never see each other. Each
sample's first label is -100, so no sample is trained to predict the next one's first token. The trainer
goes one step further where it can (``datagen.train.attention``): attention runs sample by sample, so a
whole batch, packed or not, travels as one row with no padding (``Collator(padding_free=True)``).
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datagen.errors import ConfigError, TemplateError
from datagen.records import Example

IGNORE_INDEX = -100

#: Named chat templates, for tokenizers that carry none (or to force one): ``chat_template=chatml``.
TEMPLATES = {
    "chatml": (
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    ),
    # Stanford Alpaca's prompt, one exchange after another; a reply ends with the tokenizer's EOS.
    "alpaca": (
        "{% for message in messages %}"
        "{% if message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
        "{% elif message['role'] == 'user' %}{{ '### Instruction:\n' + message['content'] + '\n\n' }}"
        "{% else %}{{ '### Response:\n' + message['content'] + eos_token + '\n\n' }}{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '### Response:\n' }}{% endif %}"
    ),
}
#: The token that ends a reply under each named template (None: the tokenizer's EOS).
_END_OF_TURN = {"chatml": "<|im_end|>", "alpaca": None}


@dataclass
class DataStats:
    """What happened to the conversations on their way to rows."""

    conversations: int = 0
    rows: int = 0
    all_masked: int = 0  # dropped: nothing left to train after truncation to max_seq_len
    template_mismatch: int = 0  # dropped: the template renders earlier turns differently once later turns follow
    prefix_mismatch: int = 0  # kept: the prompt's last token merged with the reply's first (boundary moved back)
    truncated: int = 0  # kept or dropped: longer than max_seq_len
    tokens: int = 0  # tokens in the kept rows
    trained_tokens: int = 0  # of which have a label

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class ChatTemplate:
    """A resolved template: its Jinja text, where it came from, and the id of the token that ends a reply."""

    text: str
    name: str  # "tokenizer", a TEMPLATES name, or "custom"
    end_of_turn_id: int | None


# --------------------------------------------------------------------------------------- templates


def resolve_chat_template(tokenizer: Any, chat_template: str | None, fallback: str = "chatml") -> ChatTemplate:
    """The template to render with: ``chat_template`` (a name or Jinja text), else the tokenizer's,
    else ``fallback``."""
    if chat_template is None and getattr(tokenizer, "chat_template", None):
        text, name = tokenizer.chat_template, "tokenizer"
    else:
        key, choice = (
            ("chat_template", chat_template) if chat_template is not None else ("fallback_template", fallback)
        )
        if choice in TEMPLATES:
            text, name = TEMPLATES[choice], choice
        elif "{%" in choice or "{{" in choice:
            text, name = choice, "custom"
        else:
            raise ConfigError(
                f"train.{key} must be one of {', '.join(TEMPLATES)} or Jinja template text, got {choice!r}"
            )
    end = _END_OF_TURN.get(name) or tokenizer.eos_token
    end_id = tokenizer.convert_tokens_to_ids(end) if end else None
    if end_id is not None and end_id == tokenizer.unk_token_id:
        end_id = None  # the marker is not one token in this vocabulary: train the whole reply span instead
    return ChatTemplate(text, name, end_id)


def render_ids(
    tokenizer: Any, messages: Sequence[dict[str, str]], template: ChatTemplate, generation_prompt: bool
) -> list[int]:
    """Token ids of ``messages`` rendered by ``template``
    (special tokens come from the template, never added twice)."""
    try:
        text = tokenizer.apply_chat_template(
            list(messages), chat_template=template.text, tokenize=False, add_generation_prompt=generation_prompt
        )
    except Exception as exc:  # jinja2 raises several types for a broken template
        raise TemplateError(f"the chat template ({template.name}) failed to render: {exc}") from exc
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# ------------------------------------------------------------------------------------ tokens, labels


class _Mismatch(Exception):
    """This conversation cannot be labelled turn by turn under this template."""


def tokenize_conversation(
    tokenizer: Any, messages: Sequence[dict[str, str]], template: ChatTemplate, assistant_turns: str = "all"
) -> tuple[list[int], list[int], int]:
    """``(input_ids, labels, prefix_mismatches)``: labels are -100 except on the assistant replies trained.

    ``assistant_turns="last"`` trains only the final reply. Raises ``_Mismatch`` when rendering the
    conversation turn by turn does not reproduce the whole conversation's tokens.
    """
    input_ids = render_ids(tokenizer, messages, template, False)
    labels = [IGNORE_INDEX] * len(input_ids)
    first_user = next((i for i, m in enumerate(messages) if m["role"] == "user"), len(messages))
    turns = [
        i for i, m in enumerate(messages) if m["role"] == "assistant" and i > first_user
    ]  # a reply needs a prompt
    if assistant_turns == "last":
        turns = turns[-1:]
    mismatches = 0
    for i in turns:
        prompt = render_ids(tokenizer, messages[:i], template, True)
        through = input_ids if i == len(messages) - 1 else render_ids(tokenizer, messages[: i + 1], template, False)
        start = len(prompt)
        if through[:start] != prompt:
            # trl warns on the same thing: a BPE merge across the boundary (e.g. a reply starting with "\n").
            # Train from the first token that differs, so the merged token is learnt as part of the reply.
            start = next((k for k, (a, b) in enumerate(zip(prompt, through)) if a != b), len(through))
            mismatches += 1
        end = len(through)
        if template.end_of_turn_id is not None:
            stops = [k for k in range(start, end) if through[k] == template.end_of_turn_id]
            if stops:
                end = stops[-1] + 1  # through the end-of-turn token, not the template's text after it
        # What the template adds after the end-of-turn token may merge with the next turn's tokens; only
        # the tokens up to it must be the same in the whole conversation.
        if input_ids[:end] != through[:end]:
            raise _Mismatch(f"turn {i} renders differently once later turns follow")
        labels[start:end] = through[start:end]
    if labels:
        labels[0] = IGNORE_INDEX  # nothing predicts a row's first token; when packed it must not be a target
    return input_ids, labels, mismatches


def build_rows(
    tokenizer: Any,
    conversations: Sequence[Sequence[dict[str, str]]],
    template: ChatTemplate,
    max_seq_len: int,
    assistant_turns: str = "all",
) -> tuple[list[dict[str, list[int]]], DataStats]:
    """Tokenize and label every conversation, cut to ``max_seq_len``;
    rows with nothing to train are dropped and counted."""
    stats = DataStats(conversations=len(conversations))
    rows = []
    for messages in conversations:
        try:
            input_ids, labels, mismatches = tokenize_conversation(tokenizer, messages, template, assistant_turns)
        except _Mismatch:
            stats.template_mismatch += 1
            continue
        stats.prefix_mismatch += mismatches
        if len(input_ids) > max_seq_len:
            stats.truncated += 1
            input_ids, labels = input_ids[:max_seq_len], labels[:max_seq_len]
        trained = sum(label != IGNORE_INDEX for label in labels)
        if not trained:
            stats.all_masked += 1
            continue
        rows.append({"input_ids": input_ids, "labels": labels})
        stats.tokens += len(input_ids)
        stats.trained_tokens += trained
    stats.rows = len(rows)
    return rows, stats


# ------------------------------------------------------------------------------ audit, tokenised cache

#: Conversations the start-of-training template audit renders.
AUDIT_CONVERSATIONS = 8


def audit_template(
    tokenizer: Any,
    conversations: Sequence[Sequence[dict[str, str]]],
    template: ChatTemplate,
    n: int = AUDIT_CONVERSATIONS,
) -> dict[str, Any]:
    """Check on the first ``n`` conversations that the trained tokens are the assistant replies, before training.

    Every reply (after the first user turn) must decode from inside its trained span; a template that puts
    replies elsewhere is a ``TemplateError`` naming the conversation, not a silently wrong mask. A template
    with ``{% generation %}`` markers also has its own assistant mask (``return_assistant_tokens_mask``)
    compared with ours: tokens it marks that we do not train are counted and warned about. Without markers
    (most templates, SmolLM2's included) the spans come from rendering turn by turn, and that is reported.
    """
    import logging

    log = logging.getLogger("datagen.train")
    markers = bool(re.search(r"{%-?\s*generation\s*-?%}", template.text))
    report: dict[str, Any] = {
        "template": template.name,
        "generation_markers": markers,
        "method": "generation markers" if markers else "turn-by-turn rendering",
        "conversations": 0,
        "replies": 0,
        "marker_only_tokens": None,
    }
    missing_total = 0
    for index, messages in enumerate(conversations[:n]):
        try:
            input_ids, labels, _ = tokenize_conversation(tokenizer, messages, template, "all")
        except _Mismatch:
            continue
        report["conversations"] += 1
        trained = {i for i, label in enumerate(labels) if label != IGNORE_INDEX}
        runs = itertools.groupby(range(len(labels)), key=trained.__contains__)
        spans = [tokenizer.decode([input_ids[i] for i in run]) for is_trained, run in runs if is_trained]  # decoded
        first_user = next((i for i, m in enumerate(messages) if m["role"] == "user"), len(messages))
        for turn, message in enumerate(messages):
            if message["role"] != "assistant" or turn < first_user or not message["content"].strip():
                continue
            report["replies"] += 1
            if not any(message["content"].strip() in span for span in spans):
                raise TemplateError(
                    f"chat template audit: conversation {index + 1}'s reply {message['content'][:60]!r} is not inside "
                    f"the tokens the {template.name} template's turn-by-turn rendering marks for training; set "
                    "train.chat_template (e.g. chatml) to a template that renders each turn as a prefix of the next"
                )
        if markers:
            try:
                rendered = tokenizer.apply_chat_template(
                    list(messages),
                    chat_template=template.text,
                    tokenize=True,
                    return_dict=True,
                    return_assistant_tokens_mask=True,
                )
            except Exception as exc:  # noqa: BLE001 - a template the tokenizer cannot mask with: keep ours
                log.info("chat template audit: the tokenizer could not build the generation mask (%s)", exc)
                continue
            mask = rendered.get("assistant_masks") or []
            missing_total += sum(1 for i, m in enumerate(mask) if m and i not in trained and i > 0)
    if markers:
        report["marker_only_tokens"] = missing_total
        if missing_total > report["replies"]:  # one token per reply: the end-of-turn text after our stop token
            log.warning(
                "chat template audit: the template's {%% generation %%} markers cover %d tokens the labels "
                "do not train (in %d conversations); the labels follow turn-by-turn rendering",
                missing_total,
                report["conversations"],
            )
    else:
        log.info(
            "chat template %s has no {%% generation %%} markers: reply spans come from rendering turn by turn "
            "(checked on %d conversations, %d replies)",
            template.name,
            report["conversations"],
            report["replies"],
        )
    return report


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 of what decides the tokens: the fast tokenizer's full JSON (vocab, merges, normaliser),
    special tokens."""
    digest = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(backend.to_str().encode())
    else:
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    digest.update(json.dumps([str(tokenizer.eos_token), str(tokenizer.pad_token), str(tokenizer.bos_token)]).encode())
    return digest.hexdigest()


def cached_rows(
    folder: Path,
    tokenizer: Any,
    template: ChatTemplate,
    cfg: Any,
    conversation_sets: Sequence[Sequence[Sequence[dict[str, str]]]],
    write: bool = True,
) -> list[tuple[list[dict[str, list[int]]], DataStats]]:
    """``build_rows`` for each set of conversations, from ``folder`` when the same tokenizer, template, settings
    and data were tokenised before.

    The process with ``write`` (rank 0) tokenises and saves ``rows-<key>.json``; the others wait at a barrier
    and read it, so N ranks tokenise once, and a re-run (a resume, another eval_steps) not at all. The key
    hashes the tokenizer (``tokenizer_fingerprint``), the template text, max_seq_len, assistant_turns and
    the conversations themselves; older ``rows-*.json`` files in ``folder`` are removed.
    """
    from datagen.records import write_json
    from datagen.train import distributed

    digest = hashlib.sha256()
    for part in (
        tokenizer_fingerprint(tokenizer),
        template.text,
        str(template.end_of_turn_id),
        str(cfg.max_seq_len),
        cfg.assistant_turns,
        "rows-v1",
    ):
        digest.update(part.encode())
        digest.update(b"\0")
    digest.update(
        json.dumps(
            [list(map(list, (m.items() for m in c))) for s in conversation_sets for c in s]
            + [len(s) for s in conversation_sets],
            ensure_ascii=False,
        ).encode()
    )
    path = Path(folder) / f"rows-{digest.hexdigest()[:24]}.json"

    def build() -> list[tuple[list[dict[str, list[int]]], DataStats]]:
        return [build_rows(tokenizer, s, template, cfg.max_seq_len, cfg.assistant_turns) for s in conversation_sets]

    def load() -> list[tuple[list[dict[str, list[int]]], DataStats]] | None:
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            return [(rows, DataStats(**stats)) for rows, stats in saved]
        except (OSError, ValueError, TypeError):
            return None

    result = None
    if write:
        result = load()
        if result is None:
            result = build()
            Path(folder).mkdir(parents=True, exist_ok=True)
            for old in Path(folder).glob("rows-*.json"):
                old.unlink(missing_ok=True)
            write_json(path, [[rows, stats.to_dict()] for rows, stats in result])
    distributed.barrier()
    if result is None:
        result = load()
    if result is None:  # not written (a rank without a shared file system): tokenise here
        result = build()
    return result


# ------------------------------------------------------------------------------------------- packing


def pack_rows(rows: Sequence[dict[str, list[int]]], max_seq_len: int) -> list[dict[str, list[int]]]:
    """Pack rows into sequences of at most ``max_seq_len`` tokens by best-fit decreasing.

    Longest rows first; each goes into the open bin with the least room that still fits it (else a new
    bin). ``position_ids`` restart at 0 for each sample, which is what keeps samples apart.

    >>> rows = [{"input_ids": [1] * n, "labels": [1] * n} for n in (6, 5, 4, 3, 2)]
    >>> [len(p["input_ids"]) for p in pack_rows(rows, 8)]
    [8, 8, 4]
    >>> pack_rows(rows, 8)[0]["position_ids"]
    [0, 1, 2, 3, 4, 5, 0, 1]
    """
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]["input_ids"]))
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (room left, bin index), sorted: bisect finds the best fit
    for i in order:
        size = len(rows[i]["input_ids"])
        if size > max_seq_len:
            raise ValueError(f"row {i} has {size} tokens, more than max_seq_len={max_seq_len}; truncate first")
        at = bisect.bisect_left(free, (size, -1))
        if at < len(free):
            room, b = free.pop(at)
        else:
            room, b = max_seq_len, len(bins)
            bins.append([])
        bins[b].append(i)
        if room - size > 0:
            bisect.insort(free, (room - size, b))
    return [
        {
            "input_ids": [t for i in members for t in rows[i]["input_ids"]],
            "labels": [t for i in members for t in rows[i]["labels"]],
            "position_ids": [p for i in members for p in range(len(rows[i]["input_ids"]))],
        }
        for members in bins
    ]


@dataclass
class Collator:
    """Pads a batch of rows; labels already travel with the tokens, so this only pads.

    Plain rows are right-padded with an ``attention_mask``. Packed rows (with ``position_ids``) get no
    mask: their padding is one more sample whose positions restart at 0, so transformers' packed-sequence
    mask isolates it like any other and its labels are -100.

    With ``padding_free``, a batch of rows, packed or not, becomes one row holding all of them end to end,
    ``position_ids`` restarting at each sample: no padding is computed at all. That is for a model whose
    attention runs sample by sample (``datagen.train.attention``); under transformers' dense packed-sequence
    mask that row's attention would grow with its squared length.

    With ``trained_logits_only``, the batch also holds ``logits_to_keep``: True where the next token is
    trained, so the model runs its LM head only there (``sft.trained_token_loss`` takes the loss from those
    logits). The head and the cross-entropy over a 49k vocabulary are a large share of a small model's step,
    and prompts, padding and sample boundaries need neither: SmolLM2-135M + LoRA, 2 packed rows of 245 tokens
    (68% trained), one CPU thread, forward + backward 8.7-9.9 s -> 7.6-8.7 s, interleaved runs on a busy host.

    >>> Collator(pad_id=0)([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [-100]}])
    {'input_ids': tensor([[5, 6, 7],
            [8, 0, 0]]), 'labels': tensor([[-100,    6,    7],
            [-100, -100, -100]]), 'attention_mask': tensor([[1, 1, 1],
            [1, 0, 0]])}
    """

    pad_id: int
    pad_to_multiple_of: int | None = None
    trained_logits_only: bool = False  # add a boolean logits_to_keep: positions whose next label is trained
    padding_free: bool = False  # one row per batch: the rows laid end to end, positions restarting per sample
    tokens_seen: int = field(default=0, repr=False)  # real (non-pad) tokens collated, for tokens/s

    def __call__(self, features: Sequence[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        if self.padding_free and len(features) > 1:
            features = [
                {
                    "input_ids": [t for f in features for t in f["input_ids"]],
                    "labels": [t for f in features for t in f["labels"]],
                    "position_ids": [p for f in features for p in f.get("position_ids") or range(len(f["input_ids"]))],
                }
            ]
        packed = "position_ids" in features[0]
        width = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch: dict[str, list[list[int]]] = {"input_ids": [], "labels": []}
        batch["position_ids" if packed else "attention_mask"] = []
        for f in features:
            n = len(f["input_ids"])
            pad = width - n
            self.tokens_seen += n
            batch["input_ids"].append(list(f["input_ids"]) + [self.pad_id] * pad)
            batch["labels"].append(list(f["labels"]) + [IGNORE_INDEX] * pad)
            if packed:
                batch["position_ids"].append(list(f["position_ids"]) + list(range(pad)))
            else:
                batch["attention_mask"].append([1] * n + [0] * pad)
        out = {key: torch.tensor(value, dtype=torch.long) for key, value in batch.items()}
        if self.trained_logits_only:
            keep = torch.zeros(out["labels"].shape, dtype=torch.bool)
            keep[:, :-1] = out["labels"][:, 1:] != IGNORE_INDEX  # the logits at t predict the token at t + 1
            out["logits_to_keep"] = keep
        return out


# ------------------------------------------------------------------------------------ split, hashing


def split_records(examples: Sequence[Example], eval_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """A seeded train/eval split; each side keeps the file's order. At least one record stays on each side.

    >>> train, held = split_records([Example(instruction=str(i), output="x") for i in range(10)], 0.2, seed=1)
    >>> len(train), len(held)
    (8, 2)
    """
    n = len(examples)
    if eval_fraction <= 0 or n < 2:
        return list(examples), []
    n_eval = min(n - 1, max(1, round(n * eval_fraction)))
    held = set(random.Random(seed).sample(range(n), n_eval))
    return [e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held]


def records_sha256(examples: Sequence[Example]) -> str:
    """sha256 of the records as canonical JSON lines, in order:
    the same data gives the same hash in any file format."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(json.dumps(example.to_dict(), ensure_ascii=False, sort_keys=True).encode())
        digest.update(b"\n")
    return digest.hexdigest()


# -------------------------------------------------------------------------------------- debug view

_GREEN, _DIM, _RESET = "\x1b[1;32m", "\x1b[2m", "\x1b[0m"


def show_labels(tokenizer: Any, row: dict[str, list[int]], color: bool = True) -> str:
    """The row's text with trained tokens highlighted: green when ``color``, else wrapped in ``[[ ]]``.

    Newlines are shown as ``↵`` followed by a line break, so trained newlines are visible.
    """
    marks = {True: (_GREEN, _RESET), False: (_DIM, _RESET)} if color else {True: ("[[", "]]"), False: ("", "")}
    out = []
    for trained, run in itertools.groupby(zip(row["input_ids"], row["labels"]), key=lambda t: t[1] != IGNORE_INDEX):
        opening, closing = marks[trained]
        out += [opening, *(tokenizer.decode([token]).replace("\n", "↵\n") for token, _ in run), closing]
    n_trained = sum(label != IGNORE_INDEX for label in row["labels"])
    return f"── {len(row['input_ids'])} tokens, {n_trained} trained ──\n" + "".join(out)
