"""A fixed-latency OpenAI-compatible endpoint for client benchmarks: every answer takes exactly LATENCY seconds.

Run as its own process so the server never competes with the client for the GIL:

    python bench/latency_server.py --port 0 --latency 0.1 --url-file /tmp/url

A bare ``asyncio.Protocol`` speaking just enough HTTP/1.1 (keep-alive, Content-Length bodies, pipelining) to
serve ``/v1/chat/completions``, ``/v1/completions``, ``/v1/models`` and ``/health``; each answer is a canned
body written by ``loop.call_later`` — no task, no framework, no JSON parsing. It costs ~0.08 ms of CPU per
request (uvicorn + starlette cost ~0.45 ms: ~0.3 of a core at 640 requests/s, taken from the client on a
2-core box; uvloop would save another ~0.02 ms, not worth a dependency), so a benchmark measures the client.

``GET /stats`` returns and resets what the endpoint saw since the last call: completions answered, and the
seconds from the first request's arrival to the last answer. A client's rate measured there leaves out
its start-up (a distilabel pipeline spends seconds starting processes before its first request).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import time
from pathlib import Path

MODEL = "latency-model"


def _response(status: str, body: bytes) -> bytes:
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        "connection: keep-alive\r\n\r\n"
    ).encode() + body


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


_USAGE = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
CHAT = _response(
    "200 OK",
    _json(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 0,
            "model": MODEL,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": _USAGE,
        }
    ),
)
COMPLETION = _response(
    "200 OK",
    _json(
        {
            "id": "cmpl-bench",
            "object": "text_completion",
            "created": 0,
            "model": MODEL,
            "choices": [{"index": 0, "text": "ok", "finish_reason": "stop"}],
            "usage": _USAGE,
        }
    ),
)
MODELS = _response(
    "200 OK", _json({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "bench"}]})
)
HEALTH = _response("200 OK", b'{"status":"ok"}')
NOT_FOUND = _response("404 Not Found", b'{"error":{"message":"not found"}}')
BAD_REQUEST = _response("400 Bad Request", b'{"error":{"message":"bad request"}}')
STATS_ROUTE = (b"GET", b"/stats")
ROUTES = {
    (b"POST", b"/v1/chat/completions"): (CHAT, True),
    (b"POST", b"/v1/completions"): (COMPLETION, True),
    (b"GET", b"/v1/models"): (MODELS, False),
    (b"GET", b"/health"): (HEALTH, False),
}


STATS = {"answered": 0, "first": 0.0, "last": 0.0}


def _stats() -> bytes:
    """The completions answered since the last call, over the seconds from first arrival to last answer."""
    window = max(0.0, STATS["last"] - STATS["first"]) if STATS["answered"] else 0.0
    body = _response("200 OK", _json({"answered": STATS["answered"], "seconds": window}))
    STATS.update(answered=0, first=0.0, last=0.0)
    return body


class LatencyProtocol(asyncio.Protocol):
    """One connection: parse requests out of the byte stream, answer completions after ``latency`` seconds.

    Answers on one connection go out in request order (HTTP/1.1 pipelining); the OpenAI SDKs send one request
    at a time per connection, so in practice each answer leaves exactly ``latency`` after its request arrived.
    """

    def __init__(self, latency: float):
        self.latency = latency
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.queue: list[list] = []  # [answer or None until due, ...] in request order

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end]
            lines = head.split(b"\r\n")
            try:
                method, target, _ = lines[0].split(b" ", 2)
            except ValueError:
                self._reply([BAD_REQUEST])
                self.transport and self.transport.close()
                return
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            if len(self.buffer) < end + 4 + length:
                return  # body not complete yet
            self.buffer = self.buffer[end + 4 + length :]
            route = (method, target.split(b"?", 1)[0])
            answer, slow = (_stats(), False) if route == STATS_ROUTE else ROUTES.get(route, (NOT_FOUND, False))
            slot = [None]
            self.queue.append(slot)
            if slow:
                STATS["first"] = STATS["first"] or time.monotonic()
                self.loop.call_later(self.latency, self._due, slot, answer, True)
            else:
                self._due(slot, answer)

    def _due(self, slot: list, answer: bytes, completion: bool = False) -> None:
        if completion:
            STATS["answered"] += 1
            STATS["last"] = time.monotonic()
        slot[0] = answer
        ready = []
        while self.queue and self.queue[0][0] is not None:
            ready.append(self.queue.pop(0)[0])
        self._reply(ready)

    def _reply(self, answers: list[bytes]) -> None:
        if self.transport is not None and answers:
            self.transport.write(b"".join(answers))


async def serve(sock: socket.socket, latency: float) -> None:
    server = await asyncio.get_running_loop().create_server(lambda: LatencyProtocol(latency), sock=sock, backlog=2048)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--url-file", type=Path, required=True)
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    tmp = args.url_file.with_suffix(".tmp")
    tmp.write_text(url)
    tmp.replace(args.url_file)  # the URL file appears whole; the bench then polls /health
    asyncio.run(serve(sock, args.latency))


if __name__ == "__main__":
    main()
