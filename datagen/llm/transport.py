"""How one HTTP request reaches the endpoint: the openai SDK, in this process or spread over sender processes.

``LLMClient`` decides what to send, when, and what to do with failures (retries, pacing, cache, ledger);
a transport only sends one request and turns every outcome into the raw body or one of our errors:
``Retryable`` for what deserves another attempt, an ``LLMError`` for what does not. ``openai`` exceptions
never leave this module.

- ``SdkTransport``: one ``AsyncOpenAI`` per base URL, in this process's event loop.
- ``ProcessTransport``: ``processes`` child processes (``python -m datagen.llm.transport``), each running an
  ``SdkTransport`` in its own event loop. The SDK spends ~1 ms of CPU per request building and reading it
  (see the client section of docs/BENCHMARKS.md); at 64 requests in flight against a 100 ms endpoint that
  is enough to make one event loop the bottleneck, and more so the busier the loop is. Children take that
  work to other cores and keep each loop's queue short; the parent only exchanges bytes with them.
  Messages are length-prefixed pickles over the children's stdin/stdout, between this module and itself.
  The API key reaches children through the environment they inherit, never through a message or argv.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import logging
import os
import pickle
import struct
import sys
import time
import urllib.parse
from typing import Any

import openai

from datagen.errors import (
    ConfigError,
    LLMBadResponse,
    LLMConnectionError,
    LLMError,
    LLMRateLimited,
    LLMRequestError,
    LLMServerError,
    LLMTimeout,
)
from datagen.redaction import redact_text

log = logging.getLogger("datagen.llm")

RETRYABLE_STATUS = frozenset({408, 409, 429})
_ARGS_ENV = "DATAGEN_SENDER_ARGS"  # (base URLs, timeout) for a sender process
_FRAME = struct.Struct("!I")  # length prefix of every message between a ProcessTransport and its children
API_KEY_ENV = ("DATAGEN_API_KEY", "OPENAI_API_KEY")


def resolve_api_key() -> str | None:
    """The API key from the environment, or None. Never from a flag or a config file."""
    return next((os.environ[name] for name in API_KEY_ENV if os.environ.get(name)), None)


class Retryable(Exception):
    """An attempt that failed in a way another attempt may not: ``error`` says how, ``retry_after`` when."""

    def __init__(self, error: LLMError, retry_after: float | None = None):
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[Any, ...]:  # picklable, so a sender process can hand it back
        return (Retryable, (self.error, self.retry_after))


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date); None if absent."""
    if headers is None:
        return None
    try:
        if headers.get("retry-after-ms") is not None:
            return max(0.0, float(headers["retry-after-ms"]) / 1000.0)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _http_client(timeout: float) -> Any:
    """aiohttp under the SDK: httpx's pool costs O(connections) per request and caps a 2-core client at
    ~120 requests/s against a 100 ms endpoint at concurrency 64. With aiohttp the SDK's own request building
    (~1 ms of CPU per request) is the limit: see the client section of docs/BENCHMARKS.md."""
    try:
        return openai.DefaultAioHttpClient(timeout=timeout)
    except RuntimeError:  # the aiohttp extra is missing: the SDK's default httpx client still works
        return None


def split_credentials(url: str, api_key: str | None) -> tuple[str, dict[str, str] | None]:
    """A base URL without its ``user:password@`` part, and the HTTP Basic header that carries it instead.

    The SDK always sends ``Authorization: Bearer``, and aiohttp refuses a URL with credentials beside such a
    header, so credentials in the URL (a proxy that wants Basic auth) travel as the ``Authorization`` header,
    and an API key in the environment as well would be ambiguous: a ConfigError says so.

        >>> split_credentials("http://u:p@127.0.0.1:8000/v1", None)
        ('http://127.0.0.1:8000/v1', {'Authorization': 'Basic dTpw'})
    """
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    if api_key:
        raise ConfigError(
            f"{redact_text(url)}: credentials in the base URL and an API key in the environment "
            "(DATAGEN_API_KEY/OPENAI_API_KEY): keep one of them"
        )
    host = parts.netloc.rsplit("@", 1)[1]
    user = urllib.parse.unquote(parts.username or "")
    password = urllib.parse.unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return urllib.parse.urlunsplit(parts._replace(netloc=host)), {"Authorization": f"Basic {token}"}


class SdkTransport:
    """``AsyncOpenAI`` clients, one per base URL, in the running event loop."""

    def __init__(self, base_urls: tuple[str, ...], api_key: str | None, timeout: float):
        self.timeout = timeout
        self._api_key = api_key
        self._clients = [
            openai.AsyncOpenAI(
                base_url=clean,
                api_key=api_key or "no-key-needed",
                max_retries=0,
                timeout=timeout,
                http_client=_http_client(timeout),
                default_headers=auth,
            )
            for clean, auth in (split_credentials(url, api_key) for url in base_urls)
        ]

    async def post(self, index: int, path: str, body: dict[str, Any]) -> bytes:
        """POST ``body`` to base URL ``index`` + ``path``; the raw answer body, or ``Retryable``/``LLMError``.

        The SDK's generic ``post`` (its documented way to send any request) rather than the typed
        ``chat.completions.create``: same client, headers, auth, timeouts and status errors, but without the
        walk over the request's TypedDict annotations that ``create`` does on every call (~0.6 ms of CPU);
        the caller checks the body by hand.
        """
        try:
            return await self._clients[index].post(path, cast_to=bytes, body=body)
        except openai.APIStatusError as exc:
            error = self._translate(exc)
            status = exc.status_code
            if status in RETRYABLE_STATUS or status >= 500:
                raise Retryable(error, parse_retry_after(exc.response.headers)) from exc
            raise error from self._cause(exc)
        except (openai.APITimeoutError, openai.APIConnectionError) as exc:
            raise Retryable(self._translate(exc)) from exc
        except openai.OpenAIError as exc:  # e.g. a response the SDK could not even read
            raise Retryable(LLMBadResponse(self._redact(f"unreadable response: {exc}"))) from exc

    async def start(self) -> None:
        """Nothing to start: the SDK connects on the first request."""

    async def models(self) -> list[str]:
        """The model ids the first base URL lists at ``/models``."""
        try:
            page = await self._clients[0].models.list()
        except openai.OpenAIError as exc:
            raise self._translate(exc) from self._cause(exc)
        return [m.id for m in page.data]

    async def aclose(self) -> None:
        for client in self._clients:
            await client.close()

    def _cause(self, exc: BaseException) -> BaseException | None:
        """``exc`` to chain as the cause of our error, or None when its text holds the key (a server that echoes
        the Authorization header back): a traceback prints every cause in the chain."""
        return None if self._api_key and self._api_key in str(exc) else exc

    def _redact(self, text: str) -> str:
        return redact_text(text, secrets=(self._api_key,))

    def _translate(self, exc: openai.OpenAIError) -> LLMError:
        """Map an ``openai`` exception to ours, keeping the server's message but never the key."""
        if isinstance(exc, openai.APITimeoutError) and not _is_disconnect(exc):
            return LLMTimeout(f"no answer within {self.timeout:g} s")
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc
            return LLMConnectionError(self._redact(f"connection failed: {type(cause).__name__}: {cause}"))
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            detail = exc.body.get("message") if isinstance(exc.body, dict) else None
            message = self._redact(f"HTTP {status}: {detail or exc.message}")
            if status == 429:
                return LLMRateLimited(message, status=status)
            if status >= 500 or status in (408, 409):
                return LLMServerError(message, status=status)
            if status in (401, 403):
                return LLMRequestError(
                    self._redact(f"HTTP {status}: authentication failed; check DATAGEN_API_KEY or OPENAI_API_KEY"),
                    status=status,
                )
            return LLMRequestError(message, status=status)
        return LLMError(self._redact(str(exc)))


def _is_disconnect(exc: BaseException) -> bool:
    """True when a "timeout" was really a dropped connection (the aiohttp transport reports a reset or a
    server disconnect as ConnectTimeout): any cause that is a connection error but not a timeout."""
    seen = exc.__cause__ or exc.__context__
    while seen is not None:
        name = type(seen).__name__
        if (
            not isinstance(seen, TimeoutError)
            and "Timeout" not in name
            and (
                isinstance(seen, (ConnectionError, OSError)) or name.endswith(("DisconnectedError", "ConnectionError"))
            )
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


# ------------------------------------------------------------------------------------ sender processes


class _Sender:
    """One child process and the requests it has not answered yet."""

    def __init__(self, process: asyncio.subprocess.Process):
        self.process = process
        self.pending: dict[int, asyncio.Future[bytes]] = {}
        self.reader: asyncio.Task | None = None

    @property
    def alive(self) -> bool:
        return self.process.returncode is None and self.reader is not None and not self.reader.done()


class ProcessTransport:
    """``SdkTransport`` run in ``processes`` child processes; requests go to the child with the fewest in flight.

    A child that dies (killed, out of memory) fails its unanswered requests as retryable connection errors,
    and the next request starts a new child in its place.
    """

    def __init__(self, base_urls: tuple[str, ...], timeout: float, processes: int):
        self.base_urls = base_urls
        self.timeout = timeout
        self.processes = processes
        self._senders: list[_Sender] = []
        self._next_id = 0
        self._starting = asyncio.Lock()  # one start-up at a time; binds to the loop on first use

    async def post(self, index: int, path: str, body: dict[str, Any]) -> bytes:
        sender = await self._pick()
        request_id, self._next_id = self._next_id, self._next_id + 1
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        sender.pending[request_id] = future
        # A pipe write never raises: if the child has died meanwhile, its reader sees EOF and fails this future.
        sender.process.stdin.write(_frame((request_id, index, path, body)))
        return await future

    async def start(self) -> None:
        """Start the sender processes and wait until each is ready to send (``LLMClient``'s ``async with``)."""
        await self._pick()

    async def _pick(self) -> _Sender:
        async with self._starting:
            for dead in [s for s in self._senders if not s.alive]:
                _close_stdin(dead.process)  # its pipe would otherwise be closed by the GC, maybe after the loop
            self._senders = [s for s in self._senders if s.alive]
            missing = self.processes - len(self._senders)
            if missing > 0:
                started = await asyncio.gather(*(self._start() for _ in range(missing)), return_exceptions=True)
                self._senders += [s for s in started if isinstance(s, _Sender)]  # kept, so aclose() ends them
                failures = [s for s in started if isinstance(s, BaseException)]
                if failures:
                    raise failures[0]
        return min(self._senders, key=lambda s: len(s.pending))

    async def _start(self) -> _Sender:
        """One sender process, once it has said it is ready (imports done, clients built: ~1 s)."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "datagen.llm.transport",
            "-",  # the URLs (which may hold user:key@) go by env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,  # not argv, which `ps` shows anyone
            env={**os.environ, _ARGS_ENV: repr((self.base_urls, self.timeout))},
        )
        try:
            await _read_frame(process.stdout)
        except (asyncio.IncompleteReadError, ConnectionError):
            _close_stdin(process)
            await process.wait()
            raise LLMConnectionError(
                f"a sender process failed to start (exit code {process.returncode}); its error is on stderr above"
            ) from None
        sender = _Sender(process)
        sender.reader = asyncio.ensure_future(self._read_answers(sender))
        return sender

    async def _read_answers(self, sender: _Sender) -> None:
        try:
            while True:
                request_id, ok, value = await _read_frame(sender.process.stdout)
                future = sender.pending.pop(request_id, None)
                if future is None or future.done():  # its caller was cancelled meanwhile
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
        except (asyncio.IncompleteReadError, ConnectionError, pickle.UnpicklingError, EOFError):
            pass
        finally:
            code = sender.process.returncode
            for future in sender.pending.values():
                if not future.done():
                    future.set_exception(
                        Retryable(
                            LLMConnectionError(
                                f"sender process {sender.process.pid} exited (code {code}) before answering"
                            )
                        )
                    )
            sender.pending.clear()

    async def aclose(self) -> None:
        """Close the children's stdin (they finish what they hold and exit) and wait for them."""
        senders, self._senders = self._senders, []
        for sender in senders:
            _close_stdin(sender.process)
        for sender in senders:
            try:
                await asyncio.wait_for(sender.process.wait(), timeout=self.timeout + 5)
            except asyncio.TimeoutError:
                sender.process.kill()
                await sender.process.wait()
            if sender.reader is not None:
                await asyncio.gather(sender.reader, return_exceptions=True)


def _frame(message: Any) -> bytes:
    """One message between a ProcessTransport and a child: the pickle, behind its length."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _FRAME.pack(len(data)) + data


async def _read_frame(stream: asyncio.StreamReader) -> Any:
    """The next message on ``stream``; ``asyncio.IncompleteReadError`` once the other side has closed it."""
    header = await stream.readexactly(_FRAME.size)
    return pickle.loads(await stream.readexactly(_FRAME.unpack(header)[0]))


def _close_stdin(process: asyncio.subprocess.Process) -> None:
    if process.stdin is not None and not process.stdin.is_closing():
        process.stdin.close()


async def _child(base_urls: tuple[str, ...], timeout: float, out: Any) -> None:
    """A sender process: read requests from stdin, answer each on stdout as soon as it is done, in any order."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    write_transport, write_protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, out)
    writer = asyncio.StreamWriter(write_transport, write_protocol, None, loop)
    transport = SdkTransport(base_urls, resolve_api_key(), timeout)
    tasks: set[asyncio.Task] = set()
    writer.write(_frame((-1, True, b"ready")))

    async def answer(request_id: int, index: int, path: str, body: dict[str, Any]) -> None:
        try:
            out: tuple[int, bool, Any] = (request_id, True, await transport.post(index, path, body))
        except (Retryable, LLMError) as exc:
            exc.__cause__ = exc.__context__ = None  # the SDK's exceptions hold sockets: they stay here
            out = (request_id, False, exc)
        except Exception as exc:  # noqa: BLE001 - a bug here must reach the parent as an error, not a hang
            out = (request_id, False, Retryable(LLMConnectionError(f"sender process: {type(exc).__name__}: {exc}")))
        writer.write(_frame(out))

    try:
        while True:
            try:
                request = await _read_frame(reader)
            except asyncio.IncompleteReadError:
                break  # the parent closed stdin: finish what is in flight, then exit
            task = asyncio.ensure_future(answer(*request))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
        await writer.drain()
    finally:
        await transport.aclose()


def _child_main(argument: str) -> None:
    """Entry point of a sender process. stdout carries the protocol only: anything else printed goes to stderr."""
    import ast

    urls, seconds = ast.literal_eval(os.environ.pop(_ARGS_ENV) if argument == "-" else argument)
    protocol_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        asyncio.run(_child(tuple(urls), float(seconds), protocol_out))


if __name__ == "__main__":
    # Run the module's own copy of the code (not __main__'s), so what it pickles names datagen.llm.transport.
    from datagen.llm.transport import _child_main as main

    main(sys.argv[1])
