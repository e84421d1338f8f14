"""Multi-turn Self-Instruct: multi-turn seed conversations in, multi-turn instruction data out.

Run it:  datagen self-instruct-multiturn --seeds seeds/seed_dialogues.jsonl --num-conversations 20 \\
             --out out/mt --base-url embedded

1. Openers: the single-turn bootstrap (``generate/bootstrap.py``) applied to first user turns of the seed
   dialogues (``prompts/<lang>/multiturn_openers*.j2``; a numbered list to continue, or ``style="chat"``).
2. Dialogue simulation. Each conversation draws its number of user turns (``min_turns``..``max_turns``) and
   one follow-up kind per later turn (clarify, go deeper, change a constraint, ask for another format) from
   its own seeded RNG. The assistant answers with the conversation so far (a chat completion); then the LLM
   plays the user (``multiturn_followup.j2``, the kind named in the prompt) and writes a follow-up that
   builds on the previous turns; repeat.
3. Per-turn filters. An assistant turn fails when it is empty, a refusal, truncated (``finish_reason ==
   "length"``), in the wrong language, a near-copy of an earlier answer, of the question or of the system
   message, or when it writes the other side's part (a ``User:`` line: role alternation broken). A follow-up
   fails for the same reasons (refusal aside), and when it repeats an earlier user turn (ROUGE-L ≥
   ``repeat_threshold``), copies its prompt's worked example, or ignores the context (no content word shared
   with the turns before it, and no word such as "it" or "what if" that points back at them). The first
   failure ends the conversation: it is cut back to its last good assistant turn and kept if it still has
   ≥ 2 user turns, otherwise rejected; either way the failed turn goes to ``rejects.jsonl`` with its reason.
4. Records: ``messages`` (system message first when one was used), ``instruction`` = the first user turn,
   ``output`` = the first answer, ``meta = {"method": "self-instruct-multiturn", "turns": n, ...}``.

Conversations that end below 2 user turns are topped up: more openers are bootstrapped for the shortfall
(scaled by the yield so far) and simulated, until ``num_conversations`` are kept or the round limit is reached.

Resumable and deterministic: every answer is appended to ``OUT/.state/{openers,turns}.jsonl`` as it arrives,
keyed by bootstrap round, or by (conversation, turn, role). A re-run replays the logs with the same seeded
RNGs and asks only for turns that are missing; answers that arrived but were not logged come back free from
the LLM cache. So a killed run, re-run, ends with exactly the result of an uninterrupted one.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datagen.checkpoint import count_reasons, make_reject, write_outputs
from datagen.config import check_fields
from datagen.errors import RecordError
from datagen.formats import example_from_obj
from datagen.generate.bootstrap import Bootstrap, check_config, prompt_template
from datagen.llm.client import LLMClient, LLMConfig, SamplingParams, map_bounded
from datagen.progress import progress
from datagen.prompts import render, template_ref
from datagen.records import Example, iter_json_lines, write_jsonl
from datagen.rouge import rouge_l
from datagen.step import Step, as_request, ask
from datagen.text import AI_IDENTITY, LANGUAGE_WORDS, content_words, detect_lang, find_phrase, find_refusal

STAGE = "self-instruct-multiturn"
#: Follow-up kinds, as named in ``multiturn_followup.j2``: one is drawn per later user turn.
FOLLOWUP_KINDS = ("clarify", "deeper", "constraint", "format")
#: A conversation needs this many user turns to count as multi-turn (after any cut-back).
MIN_USER_TURNS = 2

# A line that starts another speaker's part, or a chat-template token: the text plays both roles.
_ROLE_LABEL = re.compile(
    r"(?:^|\n)\s*(?:\*\*)?(?:user|assistant|human|ai|system|用户|助手|系统)(?:\*\*)?\s*[:：]"
    r"|<\|im_(?:start|end)\|>|<\|endoftext\|>|\[/?INST\]",
    re.IGNORECASE,
)
_LEADING_LABEL = re.compile(r"^\s*(?:\*\*)?(?:user|human|用户)(?:\*\*)?\s*[:：]\s*", re.IGNORECASE)


@dataclass(frozen=True)
class MultiTurnConfig:
    """Every knob of the method; structural defaults follow the single-turn Self-Instruct path."""

    seeds: Path  # seed conversations: JSONL of OpenAI ``messages`` or sharegpt
    out: Path  # output folder: records.jsonl, rejects.jsonl, stats.json, .state/
    num_conversations: int = 50  # conversations to keep (each with ≥ 2 user turns)
    lang: str = "en"  # en | zh: prompts, filters and tokenization
    style: str = "completion"  # completion (/v1/completions; best for small models) | chat
    min_turns: int = 2  # user turns per conversation: drawn from [min_turns, max_turns]
    max_turns: int = 3
    batch_size: int = 5  # opener requests in flight per bootstrap round
    num_prompt_instructions: int = 8  # in-context first turns per opener request
    num_machine_in_prompt: int = 2  # of which machine-generated, once there are any
    rouge_threshold: float = 0.7  # reject an opener with ROUGE-L F ≥ this against the pool
    repeat_threshold: float = 0.7  # a turn fails at ROUGE-L F ≥ this against an earlier one of its role
    min_context_overlap: int = 1  # content words a follow-up must share with the turns before it
    followup_kinds: tuple[str, ...] = FOLLOWUP_KINDS  # kinds drawn from, one per later user turn
    context_chars: int = 300  # answers shown to the simulated user are cut to this many chars
    system: str | None = None  # assistant system message; None → multiturn_system.j2, "" → none
    max_rounds: int | None = None  # opener rounds before giving up; None = 4× the minimum + 10
    seed: int = 0  # RNG seed: in-context sampling, turn counts, follow-up kinds
    # Openers: without a presence penalty SmolLM2-135M wrote one item seven times down the list (2 of 2 probes);
    # with 1.0, seven different ones. Items 9–15 at most, as in the single-turn path.
    opener_sampling: SamplingParams = SamplingParams(
        temperature=0.7, top_p=0.9, max_tokens=160, presence_penalty=1.0, stop=("\n\n", "\n16", "16.", "16 .")
    )
    # Answers: short (the system message asks for ≤ 4 sentences), so few are cut off at max_tokens.
    answer_sampling: SamplingParams = SamplingParams(temperature=0.7, top_p=0.9, max_tokens=150, presence_penalty=0.6)
    # Follow-ups: one line; the stops end the turn where a model starts writing the next speaker's part.
    followup_sampling: SamplingParams = SamplingParams(
        temperature=0.7,
        top_p=0.9,
        max_tokens=60,
        presence_penalty=0.6,
        stop=("\n", "User:", "Assistant:", "用户：", "助手："),
    )
    llm: LLMConfig = field(default_factory=LLMConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "seeds", Path(self.seeds))
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "followup_kinds", tuple(self.followup_kinds))  # a YAML list is fine too
        check_config(
            self, "multiturn", ("num_conversations", "min_context_overlap", "context_chars"), ("repeat_threshold",)
        )
        check_fields(
            self,
            "multiturn.",
            [
                ("min_turns", self.min_turns >= MIN_USER_TURNS, f"≥ {MIN_USER_TURNS} (a multi-turn conversation)"),
                ("max_turns", self.max_turns >= self.min_turns, f"≥ min_turns ({self.min_turns})"),
                (
                    "followup_kinds",
                    self.followup_kinds and not set(self.followup_kinds) - set(FOLLOWUP_KINDS),
                    f"a non-empty subset of {list(FOLLOWUP_KINDS)}",
                ),
            ],
        )

    @property
    def rounds_limit(self) -> int:
        return self.max_rounds or 4 * math.ceil(self.num_conversations / self.batch_size) + 10

    @property
    def system_message(self) -> str:
        """The system message sent before every assistant turn ("" for none)."""
        return render(f"{self.lang}/multiturn_system") if self.system is None else self.system


# ---------------------------------------------------------------------------------------------- seeds


def role_alternation_error(messages: list[dict[str, str]]) -> str | None:
    """Why ``messages`` is not ``[system?] user, assistant, user, …, assistant`` with text in every turn, or None."""
    offset = 1 if messages and messages[0]["role"] == "system" else 0
    body = messages[offset:]
    if not body:
        return "no user turn"
    for i, message in enumerate(body):
        expected = "user" if i % 2 == 0 else "assistant"
        if message["role"] != expected:
            return f"message {i + offset} has role {message['role']!r} where {expected!r} should come"
        if not message["content"].strip():
            return f"message {i + offset} ({message['role']}) is empty"
    if body[-1]["role"] != "assistant":
        return "the conversation ends with a user turn"
    return None


def read_seed_dialogues(path: str | Path) -> list[dict[str, Any]]:
    """Seed conversations (OpenAI ``messages`` or sharegpt ``conversations``) as ``{"id", "messages", "instruction"}``.

    Every line must be a conversation whose roles alternate; errors name ``path:line``.
    """
    seeds = []
    for number, obj in iter_json_lines(path):
        where = f"{path}:{number}"
        if not isinstance(obj, dict) or not ("messages" in obj or "conversations" in obj):
            raise RecordError(f"{where}: a seed dialogue needs 'messages' (OpenAI) or 'conversations' (sharegpt)")
        (example,) = example_from_obj(obj, where)
        problem = role_alternation_error(example.messages or [])
        if problem:
            raise RecordError(f"{where}: roles must alternate [system] user, assistant, user, …: {problem}")
        seed_id = obj["id"] if isinstance(obj.get("id"), str) and obj["id"] else f"seed_dialogue_{len(seeds)}"
        seeds.append({"id": seed_id, "messages": example.messages, "instruction": example.instruction})
    if not seeds:
        raise RecordError(f"{path}: no seed dialogues in file")
    return seeds


# ---------------------------------------------------------------------------------------------- pure steps


def build_opener_prompt(openers: list[str], cfg: MultiTurnConfig) -> str:
    """The opener-bootstrap prompt; seed first turns are put on one line each (code blocks included)."""
    flat = [" ".join(o.split()) for o in openers]
    return render(prompt_template(cfg, "multiturn_openers"), openers=flat, num_new=cfg.num_prompt_instructions)


def _shorten(text: str, limit: int) -> str:
    """``text`` on one line, cut at a word boundary to at most ``limit`` characters (… marks a cut)."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip(" ,;:") + "…"


def build_followup_prompt(messages: list[dict[str, str]], kind: str, cfg: MultiTurnConfig) -> str:
    """The prompt that has the LLM play the user: the conversation so far and the follow-up ``kind`` wanted."""
    turns = [
        {"role": m["role"], "content": _shorten(m["content"], cfg.context_chars)}
        for m in messages
        if m["role"] != "system"
    ]
    return render(f"{cfg.lang}/multiturn_followup", turns=turns, kind=kind, chat=cfg.style == "chat")


def plan_conversation(cfg: MultiTurnConfig, index: int, opener: str) -> tuple[int, list[str]]:
    """``(user turns, follow-up kinds)`` for conversation ``index``, from an RNG of its own.

    Seeded by (seed, index, opener) and not by the run's shared RNG, so the plan of a conversation does not
    depend on how many others ran before it or in which order answers arrived.
    """
    rng = random.Random(f"{cfg.seed}|{index}|{opener}")
    turns = rng.randint(cfg.min_turns, cfg.max_turns)
    return turns, [rng.choice(cfg.followup_kinds) for _ in range(turns - 1)]


# Words by which a turn points back at the conversation: pronouns and demonstratives ("can you make *it*
# shorter?"), continuation markers ("*what if* I …", "*and* at x = π?", "*more*") and the acknowledgements
# follow-ups open with ("nice!", "oops"). Human follow-ups lean on these rather than repeat content words: of
# the 78 English and 36 Chinese follow-ups in the seed dialogues, content-word overlap alone flags 25 and 6
# as ignoring the context; counting these references too, 5 and 2 ("What's the chemical equation?").
_REFERENCES_EN = re.compile(
    r"^\W*(?:and|so)\b|\b(?:it|its|it's|that|this|these|those|them|they|one|ones|same|such|there|what if|"
    r"what about|how about|instead|again|another|else|also|too|then|now|still|more|but|actually|yes|nice|good|"
    r"great|thanks|ok|okay|oops)\b",
    re.IGNORECASE,
)
_REFERENCES_ZH = re.compile(r"[它这那还再也呢更]|刚才|上面|前面|如果|但是|可是|不过|好的|谢谢")


def _mentions_language(texts: list[str]) -> bool:
    lowered = " ".join(texts).lower()
    return any(word in lowered for word in LANGUAGE_WORDS["en"] + LANGUAGE_WORDS["zh"])


_CODE = re.compile(r"```.*?(?:```|$)|`[^`\n]*`", re.DOTALL)


def _prose_lang(text: str) -> str:
    """The language of ``text`` with code left out (a Chinese answer full of Python is still Chinese)."""
    prose = _CODE.sub(" ", text)
    return detect_lang(prose if prose.strip() else text)


def _common_checks(text: str, finish_reason: str, role: str, users: list[str], lang: str) -> tuple[str, Any] | None:
    if not text.strip():
        return f"empty_{role}", None
    label = _ROLE_LABEL.search(text)
    if label:
        return "role_break", label.group(0).strip()
    if finish_reason == "length":
        return f"truncated_{role}", None
    if role == "answer":
        refusal = find_refusal(text)
        if refusal:
            return "refusal", refusal
    elif find_phrase(text, AI_IDENTITY):  # "As an AI language model, …" from the user: it answered instead
        return "role_break", find_phrase(text, AI_IDENTITY)
    found = _prose_lang(text)
    # An answer may rightly switch language when the user asked for a translation or named a language.
    if found != lang and not _mentions_language(users + [text]):
        return "wrong_language", found
    return None


def check_answer(
    text: str, finish_reason: str, messages: list[dict[str, str]], lang: str, repeat_threshold: float = 0.7
) -> tuple[str, Any] | None:
    """The first rule an assistant turn breaks, as ``(reason, detail)``, or None when it passes.

    Reasons: ``empty_answer``, ``role_break`` (it writes a ``User:`` line or a chat-template token: the model
    went on to play the user), ``truncated_answer``, ``refusal``, ``wrong_language``, ``echoes_system`` (it
    repeats a sentence of the system message: SmolLM2-135M did so in 3 of its first 5 Chinese answers),
    ``echoes_user`` (ROUGE-L ≥ ``repeat_threshold`` against the question: it parrots it back) and
    ``repeated_answer`` (ROUGE-L ≥ ``repeat_threshold`` against an earlier answer: in a 12-conversation
    English run it answered 3 follow-ups with its previous answer, 2 of them word for word).
    """
    users = [m["content"] for m in messages if m["role"] == "user"]
    broken = _common_checks(text, finish_reason, "answer", users, lang)
    if broken:
        return broken
    for system in (m["content"] for m in messages if m["role"] == "system"):
        # Sentence by sentence: the model often repeats only the instruction part of the system message.
        for sentence in re.split(r"(?<=[.!?。！？])\s*", system):
            if len(sentence.strip()) >= 8 and " ".join(sentence.split()) in " ".join(text.split()):
                return "echoes_system", sentence.strip()
        if system.strip() and rouge_l(text, system) >= repeat_threshold:
            return "echoes_system", system.strip()
    if users and rouge_l(text, users[-1]) >= repeat_threshold:
        return "echoes_user", {"rougeL": round(rouge_l(text, users[-1]), 4)}
    for turn, earlier in enumerate(m["content"] for m in messages if m["role"] == "assistant"):
        score = rouge_l(text, earlier)
        if score >= repeat_threshold:
            return "repeated_answer", {"earlier_turn": turn, "rougeL": round(score, 4)}
    return None


def check_followup(
    text: str,
    finish_reason: str,
    messages: list[dict[str, str]],
    lang: str,
    repeat_threshold: float = 0.7,
    min_context_overlap: int = 1,
    prompt: str = "",
) -> tuple[str, Any] | None:
    """The first rule a simulated user turn breaks, as ``(reason, detail)``, or None when it passes.

    Reasons: ``empty_followup``, ``role_break`` (it writes the assistant's part too, or speaks as an AI),
    ``truncated_followup``, ``wrong_language``, ``repeated_followup`` (ROUGE-L ≥
    ``repeat_threshold`` against an earlier user turn), ``copies_prompt`` (found word for word in the
    ``prompt`` that asked for it, such as its worked example) and ``ignores_context`` (fewer than
    ``min_context_overlap`` content words shared with the turns before it, and no word that points back at
    them: "it", "that", "what if", "nice", 这, 那, 还, …). A user who says "I can't get it to work" is not
    refusing, so follow-ups get no refusal check.
    """
    users = [m["content"] for m in messages if m["role"] == "user"]
    broken = _common_checks(text, finish_reason, "followup", users, lang)
    if broken:
        return broken
    for turn, earlier in enumerate(users):
        score = rouge_l(text, earlier)
        if score >= repeat_threshold:
            return "repeated_followup", {"earlier_turn": turn, "similar": earlier, "rougeL": round(score, 4)}
    if prompt and " ".join(text.split()) in " ".join(prompt.split()):
        return "copies_prompt", None
    context = {w for m in messages if m["role"] != "system" for w in content_words(m["content"], min_len=3)}
    shared = sorted(set(content_words(text, min_len=3)) & context)
    if len(shared) < min_context_overlap and not (_REFERENCES_EN.search(text) or _REFERENCES_ZH.search(text)):
        return "ignores_context", {"shared": shared}
    return None


def clean_followup(text: str) -> str:
    """The follow-up without a leading ``User:`` label or wrapping quotes."""
    text = _LEADING_LABEL.sub("", text.strip(), count=1).strip()
    if len(text) > 1 and text[0] in "\"“「'" and text[-1] in "\"”」'":
        text = text[1:-1].strip()
    return text


def request_hash(kind: str, payload: Any) -> str:
    """Hash of one request (``kind`` chat or completion, messages or prompt): what a state row was asked."""
    blob = json.dumps({"kind": kind, "payload": payload}, ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def turn_key(index: int, turn: int, role: str) -> str:
    """State-log key of one LLM answer: conversation, user-turn number (0-based) and role."""
    return f"c{index}|t{turn}|{role}"


# ---------------------------------------------------------------------------------------------- the stage


class _Run(Bootstrap):
    """State of one run: the opener pool (step 1 is the shared bootstrap), the conversations, the client."""

    def __init__(self, cfg: MultiTurnConfig, llm: LLMClient, seeds: list[dict[str, Any]]):
        super().__init__(
            cfg,
            llm,
            seeds,
            stage=STAGE,
            step="opener",
            prompt=lambda o: build_opener_prompt(o, cfg),
            digest=lambda p: request_hash(*as_request(cfg.style, p)),
            sampling=cfg.opener_sampling,
            failure_lang=cfg.lang,
        )
        self.results: dict[int, dict[str, Any]] = {}
        self.system = cfg.system_message
        self.refs = {
            "openers": template_ref(prompt_template(cfg, "multiturn_openers")),
            "followup": template_ref(f"{cfg.lang}/multiturn_followup"),
        }

    # -------------------------------------------------------------------------------------- step 2: dialogue

    async def simulate_all(self, log: Step) -> None:
        """Simulate every accepted opener's conversation not simulated yet (conversations run concurrently)."""
        todo = [m for m in self.machine if m["index"] not in self.results]
        # One request per conversation is in flight at a time; in batch mode every conversation's next turn
        # goes into the same job.
        llm = self.cfg.llm
        limit = llm.concurrency if llm.batch == "off" else llm.gather_limit
        with progress(len(self.machine), "multiturn: conversations", initial=len(self.machine) - len(todo)) as bar:
            async for opener, result in map_bounded(lambda m: self._converse(m, log), todo, limit=limit):
                if isinstance(result, BaseException):  # an LLMError escaped a turn: never expected
                    raise result
                self.results[opener["index"]] = result
                bar.update()

    async def _turn(
        self, log: Step, key: str, kind: str, payload: Any, params: SamplingParams, sample_index: int
    ) -> dict[str, Any]:
        """One LLM answer: replayed from the log, or asked for and logged at once (a failure too: it ends the turn)."""
        return await log.answer_one(
            key,
            lambda: ask(self.llm, kind, payload, params, sample_index),
            digest=request_hash(kind, payload),
            failed_as="error",
        )

    async def _converse(self, opener: dict[str, Any], log: Step) -> dict[str, Any]:
        """Play one conversation to its planned length or its first failed turn."""
        cfg, index = self.cfg, opener["index"]
        planned, kinds = plan_conversation(cfg, index, opener["instruction"])
        messages = [{"role": "system", "content": self.system}] if self.system else []
        messages.append({"role": "user", "content": opener["instruction"]})
        usage: Counter = Counter()
        models: list[str] = []
        finish_reasons: list[str] = []  # one per kept assistant turn
        failure: dict[str, Any] | None = None
        for turn in range(planned):
            if turn > 0:
                prompt = build_followup_prompt(messages, kinds[turn - 1], cfg)
                row = await self._turn(
                    log, turn_key(index, turn, "user"), *as_request(cfg.style, prompt), cfg.followup_sampling, index
                )
                text = "" if "error" in row else clean_followup(row["text"])
                broken = (
                    (f"llm_{row['error']}", row["detail"])
                    if "error" in row
                    else check_followup(
                        text,
                        row["finish_reason"],
                        messages,
                        cfg.lang,
                        cfg.repeat_threshold,
                        cfg.min_context_overlap,
                        prompt,
                    )
                )
                if broken:
                    failure = {
                        "turn": turn,
                        "role": "user",
                        "reason": broken[0],
                        "detail": broken[1],
                        "text": text,
                        "kind": kinds[turn - 1],
                        "context": list(messages),
                    }
                    break
                usage.update(row["usage"])
                messages.append({"role": "user", "content": text})
            row = await self._turn(
                log, turn_key(index, turn, "assistant"), "chat", list(messages), cfg.answer_sampling, index
            )
            text = "" if "error" in row else row["text"].strip()
            broken = (
                (f"llm_{row['error']}", row["detail"])
                if "error" in row
                else check_answer(text, row["finish_reason"], messages, cfg.lang, cfg.repeat_threshold)
            )
            if broken:
                failure = {
                    "turn": turn,
                    "role": "assistant",
                    "reason": broken[0],
                    "detail": broken[1],
                    "text": text,
                    "context": list(messages),
                }
                messages.pop()  # cut back to the last good assistant turn
                break
            usage.update(row["usage"])
            models.append(row["model"])
            finish_reasons.append(row["finish_reason"])
            messages.append({"role": "assistant", "content": text})
        return {
            "messages": messages,
            "planned": planned,
            "kinds": kinds,
            "failure": failure,
            "usage": dict(usage),
            "model": models[0] if models else None,
            "finish_reasons": finish_reasons,
        }


async def generate(cfg: MultiTurnConfig) -> dict[str, Any]:
    """Run the whole method; returns the stats also written to ``OUT/stats.json``."""
    started = time.monotonic()
    seeds = read_seed_dialogues(cfg.seeds)  # validates the whole file before anything is written
    async with LLMClient(cfg.llm) as llm:
        run = _Run(cfg, llm, seeds)
        # Failed requests stay settled (``keep=None``): a failed turn ended its conversation, and ends it again.
        with Step(cfg.out, "openers", keep=None) as opener_log, Step(cfg.out, "turns", keep=None) as turn_log:
            goal = cfg.num_conversations
            while True:
                await run.grow(opener_log, goal, "multiturn: openers")
                await run.simulate_all(turn_log)
                kept = sum(1 for r in run.results.values() if _user_turns(r["messages"]) >= MIN_USER_TURNS)
                if kept >= cfg.num_conversations or run.rounds >= cfg.rounds_limit or len(run.machine) < goal:
                    break
                goal = len(run.machine) + _top_up(cfg.num_conversations - kept, kept, len(run.machine))
        ledger = llm.ledger.as_dict()

    records, turn_rejects = _assemble(cfg, run)
    rejects = run.rejects + turn_rejects
    write_jsonl(
        cfg.out / "openers.jsonl",
        [
            {
                "instruction": m["instruction"],
                "round": m["round"],
                "most_similar_instructions": dict(m["similar"]),
                "source": m["source"],
            }
            for m in run.machine
        ],
    )
    stats = {
        "stage": STAGE,
        "lang": cfg.lang,
        "style": cfg.style,
        "seeds": len(seeds),
        "rounds": run.rounds,
        "openers": len(run.machine),
        "conversations": len(records),
        "target_reached": len(records) >= cfg.num_conversations,
        "turns": _distribution(r.meta["turns"] for r in records),
        "planned_turns": _distribution(r["planned"] for r in run.results.values()),
        "followup_kinds": dict(Counter(k for r in records for k in r.meta["followups"])),
        "cut_back": sum(1 for r in records if r.meta.get("cut")),
        "opener_rejects": count_reasons(run.rejects),
        "turn_failures": dict(Counter(r["failure"]["reason"] for r in run.results.values() if r["failure"])),
        "conversation_rejects": count_reasons(r for r in turn_rejects if r.reject.get("step") == "conversation"),
        "llm": ledger,
        "seconds": round(time.monotonic() - started, 3),
    }
    return write_outputs(cfg.out, records, rejects, stats)


def _top_up(shortfall: int, kept: int, tried: int) -> int:
    """Openers to add for ``shortfall`` more conversations: scaled by the yield so far (at most 4×).

    A conversation's turns are sequential, so the run is fastest when many conversations are in flight at
    once: asking for the bare shortfall would, at SmolLM2-135M's ~50% English yield, take a round per few
    conversations. Any surplus is cut as ``over_target``, which costs tokens but no extra round.
    """
    rate = max(kept / tried if tried else 1.0, 0.25)
    return math.ceil(shortfall / rate)


def _user_turns(messages: list[dict[str, str]]) -> int:
    return sum(1 for m in messages if m["role"] == "user")


def _distribution(values: Any) -> dict[str, int]:
    return {str(k): v for k, v in sorted(Counter(values).items())}


def _assemble(cfg: MultiTurnConfig, run: _Run) -> tuple[list[Example], list[Example]]:
    """Records of the first ``num_conversations`` conversations with ≥ 2 user turns, and the turn rejects."""
    records: list[Example] = []
    rejects: list[Example] = []
    for opener in run.machine:
        result = run.results[opener["index"]]
        messages, failure = result["messages"], result["failure"]
        turns = _user_turns(messages)
        meta = {
            "method": STAGE,
            "turns": turns,
            "model": result["model"],
            "prompt": run.refs,
            "source": opener["source"],
            "round": opener["round"],
            "similar": opener["similar"],
            "followups": result["kinds"][: max(0, turns - 1)],
            "planned_turns": result["planned"],
            "usage": result["usage"],
        }
        if result["finish_reasons"]:  # of the last assistant turn (the filter's truncation rule reads it)
            meta["finish_reason"], meta["finish_reasons"] = result["finish_reasons"][-1], result["finish_reasons"]
        first_answer = next((m["content"] for m in messages if m["role"] == "assistant"), "")
        # Every record and reject of this conversation: its opener and first answer, with the given turns and meta.
        conversation = functools.partial(
            Example, instruction=opener["instruction"], output=first_answer, lang=cfg.lang
        )
        keep = turns >= MIN_USER_TURNS and role_alternation_error(messages) is None
        if failure:
            # The failed turn itself, so a reader sees what was cut and why.
            failed = failure["context"] + [{"role": failure["role"], "content": failure["text"]}]
            detail = {"turn": failure["turn"], "role": failure["role"], "user_turns_kept": turns if keep else 0}
            if "kind" in failure:
                detail["followup_kind"] = failure["kind"]
            if isinstance(failure["detail"], dict):
                detail.update(failure["detail"])
            elif failure["detail"] is not None:
                detail["match"] = failure["detail"]
            rejects.append(
                make_reject(
                    conversation(messages=failed, meta=dict(meta)),
                    STAGE,
                    failure["reason"],
                    detail,
                    step="turn" if keep else "conversation",
                )
            )
            meta["cut"] = failure["reason"]
        if not keep:
            if not failure:  # cannot happen with min_turns ≥ 2; kept as a guard for the alternation invariant
                rejects.append(
                    make_reject(
                        conversation(messages=messages, meta=meta),
                        STAGE,
                        "role_alternation",
                        role_alternation_error(messages),
                        step="conversation",
                    )
                )
            continue
        if len(records) >= cfg.num_conversations:
            rejects.append(
                make_reject(
                    conversation(messages=messages, meta=meta),
                    STAGE,
                    "over_target",
                    None,
                    step="conversation",
                )
            )
            continue
        records.append(conversation(messages=messages, meta=meta))
    return records, rejects
