"""A fixed-latency OpenAI-compatible endpoint for client benchmarks: every answer takes exactly LATENCY seconds.

Run as its own process so the server never competes with the client for the GIL:

    python bench/latency_server.py --port 0 --latency 0.1 --url-file /tmp/url

asyncio + uvicorn: a request costs ~0.1 ms of CPU here, so 64 in flight at 100 ms each (640 requests/s) is
well inside what it can serve on one core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import time
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

MODEL = "latency-model"


def make_app(latency: float) -> Starlette:
    async def chat(request: Request) -> Response:
        body = json.loads(await request.body())
        await asyncio.sleep(latency)
        text = "ok " + str(len(body.get("messages", [])))
        payload = {"id": "cmpl-bench", "object": "chat.completion", "created": int(time.time()), "model": MODEL,
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}}
        return Response(json.dumps(payload), media_type="application/json")

    async def models(request: Request) -> Response:
        return Response(json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model"}]}),
                        media_type="application/json")

    async def health(request: Request) -> Response:
        return Response('{"status": "ok"}', media_type="application/json")

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                             Route("/v1/models", models), Route("/health", health)])


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
    config = uvicorn.Config(make_app(args.latency), log_level="warning", access_log=False, backlog=2048)
    server = uvicorn.Server(config)
    tmp = args.url_file.with_suffix(".tmp")
    tmp.write_text(url)
    tmp.replace(args.url_file)
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
