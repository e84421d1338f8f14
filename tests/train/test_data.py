"""Records → template → tokens → labels → packing, on the real SmolLM2 tokenizer (ChatML)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datagen.errors import ConfigError
from datagen.formats import read_any
from datagen.records import Example
from datagen.train.data import (
    IGNORE_INDEX,
    Collator,
    build_rows,
    pack_rows,
    records_sha256,
    resolve_chat_template,
    show_labels,
    split_records,
    tokenize_conversation,
)

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "Four."},
    {"role": "user", "content": "And times 3?"},
    {"role": "assistant", "content": "Twelve."},
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def template(tokenizer):
    return resolve_chat_template(tokenizer, None, "chatml")


def trained_spans(tokenizer, row) -> list[str]:
    """The decoded text of each maximal run of trained tokens."""
    spans, current = [], []
    for token, label in zip(row["input_ids"], row["labels"]):
        if label != IGNORE_INDEX:
            assert label == token  # labels are the tokens themselves; the model shifts them
            current.append(token)
        elif current:
            spans.append(tokenizer.decode(current))
            current = []
    if current:
        spans.append(tokenizer.decode(current))
    return spans


def write_lines(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ------------------------------------------------------------------------------------------ labels


def test_alpaca_record_trains_only_the_reply_and_its_end_of_turn(tmp_path, tokenizer, template):
    path = write_lines(
        tmp_path / "a.jsonl", [{"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"}]
    )
    rows, stats = build_rows(tokenizer, [e.conversation() for e in read_any(path)], template, max_seq_len=256)
    [row] = rows
    assert trained_spans(tokenizer, row) == ["Bonjour<|im_end|>"]
    text = tokenizer.decode(row["input_ids"])
    assert text.endswith("<|im_start|>assistant\nBonjour<|im_end|>\n")  # the trailing newline is rendered ...
    assert row["labels"][-1] == IGNORE_INDEX  # ... but not trained: it is the template's, not the reply's
    assert "Translate to French.\n\nGood morning" in text  # instruction + input form the user turn
    assert stats.rows == 1 and stats.trained_tokens == sum(label != IGNORE_INDEX for label in row["labels"])


def test_multi_turn_trains_every_assistant_turn(tokenizer, template):
    input_ids, labels, mismatches = tokenize_conversation(tokenizer, CHAT, template, "all")
    row = {"input_ids": input_ids, "labels": labels}
    assert trained_spans(tokenizer, row) == ["Four.<|im_end|>", "Twelve.<|im_end|>"]
    assert mismatches == 0
    assert (
        input_ids
        == tokenizer(tokenizer.apply_chat_template(CHAT, tokenize=False), add_special_tokens=False)["input_ids"]
    )


def test_last_only_option_trains_the_final_reply(tokenizer, template):
    input_ids, labels, _ = tokenize_conversation(tokenizer, CHAT, template, "last")
    assert trained_spans(tokenizer, {"input_ids": input_ids, "labels": labels}) == ["Twelve.<|im_end|>"]


def test_an_opening_assistant_turn_without_a_prompt_is_not_trained(tokenizer, template):
    messages = [{"role": "assistant", "content": "Hi! How can I help?"}, *CHAT[1:3]]
    input_ids, labels, _ = tokenize_conversation(tokenizer, messages, template)
    assert trained_spans(tokenizer, {"input_ids": input_ids, "labels": labels}) == ["Four.<|im_end|>"]


def test_sharegpt_and_messages_give_the_same_rows(tmp_path, tokenizer, template):
    sharegpt = [
        {"from": {"system": "system", "user": "human", "assistant": "gpt"}[m["role"]], "value": m["content"]}
        for m in CHAT
    ]
    a = write_lines(tmp_path / "s.jsonl", [{"conversations": sharegpt}])
    b = write_lines(tmp_path / "m.jsonl", [{"messages": CHAT}])
    rows_a, _ = build_rows(tokenizer, [e.conversation() for e in read_any(a)], template, 256)
    rows_b, _ = build_rows(tokenizer, [e.conversation() for e in read_any(b)], template, 256)
    assert rows_a == rows_b and len(rows_a) == 1


def test_truncation_drops_rows_with_nothing_left_to_train_and_counts_them(tokenizer, template):
    long_prompt = [{"role": "user", "content": "word " * 300}, {"role": "assistant", "content": "Short answer."}]
    long_reply = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "yes " * 300}]
    fits = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    rows, stats = build_rows(tokenizer, [long_prompt, long_reply, fits], template, max_seq_len=64)
    assert stats.all_masked == 1 and stats.truncated == 2 and stats.rows == 2 == len(rows)
    assert all(len(r["input_ids"]) <= 64 for r in rows)
    cut = rows[0]
    assert len(cut["input_ids"]) == 64 and cut["labels"][-1] != IGNORE_INDEX  # the reply is cut, not dropped
    assert template.end_of_turn_id not in [t for t, lab in zip(cut["input_ids"], cut["labels"]) if lab != IGNORE_INDEX]


def test_reply_merging_with_the_prompt_moves_the_boundary_back(tokenizer, template):
    # "assistant\n" + "\n\nHi" tokenizes as one "\n\n\n" token: the prompt is no longer a token prefix.
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "\n\nHello there"}]
    input_ids, labels, mismatches = tokenize_conversation(tokenizer, messages, template)
    assert mismatches == 1
    [span] = trained_spans(tokenizer, {"input_ids": input_ids, "labels": labels})
    assert span.endswith("\n\nHello there<|im_end|>")


def test_template_that_rewrites_earlier_turns_drops_the_conversation(tokenizer):
    # Like reasoning templates that strip earlier assistant turns: turn-by-turn labels would be wrong.
    text = (
        "{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}"
        "<|im_start|>assistant\n…<|im_end|>\n"
        "{% else %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    template = resolve_chat_template(tokenizer, text)
    assert template.name == "custom"
    rows, stats = build_rows(tokenizer, [CHAT, CHAT[:3]], template, 256)
    assert stats.template_mismatch == 1 and len(rows) == 1


def test_named_template_when_the_tokenizer_has_none(tokenizer):
    from copy import deepcopy

    bare = deepcopy(tokenizer)
    bare.chat_template = None
    template = resolve_chat_template(bare, None, "chatml")
    assert template.name == "chatml" and template.end_of_turn_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    input_ids, labels, _ = tokenize_conversation(bare, CHAT[1:3], template)
    assert (
        tokenizer.decode(input_ids)
        == "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\nFour.<|im_end|>\n"
    )
    alpaca = resolve_chat_template(bare, None, "alpaca")
    input_ids, labels, _ = tokenize_conversation(bare, CHAT, alpaca)
    assert trained_spans(bare, {"input_ids": input_ids, "labels": labels}) == ["Four.<|im_end|>", "Twelve.<|im_end|>"]
    with pytest.raises(ConfigError, match="train.fallback_template"):
        resolve_chat_template(bare, None, "vicuna")
    with pytest.raises(ConfigError, match="train.chat_template"):
        resolve_chat_template(tokenizer, "no-such-template")


def test_debug_view_highlights_the_trained_span(tokenizer, template):
    input_ids, labels, _ = tokenize_conversation(tokenizer, CHAT, template)
    plain = show_labels(tokenizer, {"input_ids": input_ids, "labels": labels}, color=False)
    assert "[[Four.<|im_end|>]]↵" in plain and "[[Twelve.<|im_end|>]]↵" in plain
    assert plain.count("[[") == 2
    assert plain.startswith(
        f"── {len(input_ids)} tokens, {sum(label != IGNORE_INDEX for label in labels)} trained ──\n"
    )
    colored = show_labels(tokenizer, {"input_ids": input_ids, "labels": labels}, color=True)
    assert "\x1b[1;32mFour.<|im_end|>\x1b[0m" in colored


# ------------------------------------------------------------------------------------------ packing


def _rows(lengths: list[int]) -> list[dict[str, list[int]]]:
    return [
        {"input_ids": [100 * i + k for k in range(n)], "labels": [IGNORE_INDEX] + [100 * i + k for k in range(1, n)]}
        for i, n in enumerate(lengths)
    ]


def test_best_fit_decreasing_packs_every_sample_once_within_capacity():
    lengths = [7, 5, 5, 4, 3, 3, 2, 2, 1]  # 32 tokens: 4 bins of 8 is optimal, and BFD finds it
    rows = _rows(lengths)
    packed = pack_rows(rows, 8)
    assert len(packed) == 4 and all(len(p["input_ids"]) <= 8 for p in packed)
    samples = []
    for p in packed:
        starts = [k for k, pos in enumerate(p["position_ids"]) if pos == 0]
        for a, b in zip(starts, starts[1:] + [len(p["input_ids"])]):
            assert p["position_ids"][a:b] == list(range(b - a))  # positions restart per sample
            samples.append({"input_ids": p["input_ids"][a:b], "labels": p["labels"][a:b]})
    assert sorted(samples, key=lambda r: r["input_ids"]) == sorted(rows, key=lambda r: r["input_ids"])
    with pytest.raises(ValueError, match="truncate first"):
        pack_rows(_rows([9]), 8)


def test_collator_pads_plain_rows_with_a_mask_and_packed_rows_with_a_restart():
    plain = Collator(pad_id=0)(_rows([3, 1]))
    assert plain["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]] and "position_ids" not in plain
    packed = Collator(pad_id=0)(pack_rows(_rows([3, 2, 2]), 4))
    assert "attention_mask" not in packed  # a mask would switch off the packed-sequence mask in transformers
    assert packed["position_ids"].tolist() == [[0, 1, 2, 0], [0, 1, 0, 1]]
    assert packed["labels"][0, -1].item() == IGNORE_INDEX


def _per_sample_nll(model, batch) -> dict[tuple[int, ...], list[float]]:
    """Each sample's per-token NLL on its trained tokens, keyed by the sample's token ids."""
    import torch

    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False).logits
    labels = batch["labels"]
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:], reduction="none")
    out = {}
    for b in range(labels.shape[0]):
        if "position_ids" in batch:
            starts = torch.nonzero(batch["position_ids"][b] == 0).flatten().tolist()
            bounds = zip(starts, starts[1:] + [labels.shape[1]])
        else:
            bounds = [(0, int(batch["attention_mask"][b].sum()))]
        for start, end in bounds:
            trained = labels[b, start + 1 : end] != IGNORE_INDEX
            if trained.any():
                out[tuple(batch["input_ids"][b, start:end].tolist())] = nll[b, start : end - 1][trained].tolist()
    return out


def test_packed_and_unpacked_give_the_same_per_token_loss(tiny_model_dir, tokenizer, template):
    import torch
    from transformers import AutoModelForCausalLM

    conversations = [
        [
            {"role": "user", "content": f"Question {i}: " + "word " * (3 * i)},
            {"role": "assistant", "content": f"Answer {i}: " + "yes " * (2 * i)},
        ]
        for i in range(8)
    ]
    rows, _ = build_rows(tokenizer, conversations, template, 256)
    packed = pack_rows(rows, 256)
    assert len(packed) < len(rows) and any(p["position_ids"].count(0) > 1 for p in packed)
    collate = Collator(tokenizer.pad_token_id)
    for implementation in ("sdpa", "eager"):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=implementation).eval()
        alone = {}
        for row in rows:
            alone.update(_per_sample_nll(model, collate([row])))
        together = _per_sample_nll(model, collate(packed))
        padded = _per_sample_nll(model, collate(rows))
        assert together.keys() == alone.keys() == padded.keys() and len(alone) == len(rows)
        for key, expected in alone.items():
            assert together[key] == pytest.approx(expected, abs=1e-4), implementation
            assert padded[key] == pytest.approx(expected, abs=1e-4), implementation
        # The model's own mean loss (what the Trainer optimises) agrees as well.
        with torch.no_grad():
            loss_packed = model(**collate(packed), use_cache=False).loss
            loss_padded = model(**collate(rows), use_cache=False).loss
        assert float(loss_packed) == pytest.approx(float(loss_padded), abs=1e-4)


def test_a_kv_cache_would_break_packing_isolation(tiny_model_dir, tokenizer, template):
    """Why the trainer sets use_cache=False: with a cache, transformers skips the packed-sequence mask."""
    import torch
    from transformers import AutoModelForCausalLM

    conversations = [
        [{"role": "user", "content": f"Q{i} " * 5}, {"role": "assistant", "content": f"A{i} " * 5}] for i in range(2)
    ]
    rows, _ = build_rows(tokenizer, conversations, template, 256)
    batch = Collator(tokenizer.pad_token_id)(pack_rows(rows, 256))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        isolated = model(**batch, use_cache=False).loss
        leaky = model(**batch, use_cache=True).loss
    assert abs(float(isolated) - float(leaky)) > 1e-4


# ------------------------------------------------------------------------------------ split, hashing


def test_split_is_seeded_disjoint_and_keeps_file_order():
    examples = [Example(instruction=f"task {i}", output="x") for i in range(20)]
    train, held = split_records(examples, 0.2, seed=7)
    assert len(held) == 4 and len(train) == 16
    assert {e.id for e in train}.isdisjoint(e.id for e in held)
    assert split_records(examples, 0.2, seed=7) == (train, held)
    assert split_records(examples, 0.2, seed=8)[1] != held
    assert train == sorted(train, key=examples.index)
    assert split_records(examples, 0.0, seed=7) == (examples, [])
    assert len(split_records(examples[:2], 0.01, seed=7)[1]) == 1  # a fraction > 0 always holds one out


def test_data_hash_depends_on_content_not_file_format(tmp_path):
    rows = [
        {"instruction": "Add.", "input": "2 3", "output": "5"},
        {"instruction": "Name a colour.", "output": "Red."},
    ]
    alpaca = read_any(write_lines(tmp_path / "a.jsonl", rows))
    pretty = tmp_path / "b.jsonl"
    pretty.write_text("\n".join(json.dumps(r, indent=None, separators=(" ,", " : ")) for r in rows) + "\n\n")
    assert records_sha256(alpaca) == records_sha256(read_any(pretty))
    assert records_sha256(alpaca) != records_sha256(alpaca[:1])
    assert len(records_sha256(alpaca)) == 64
