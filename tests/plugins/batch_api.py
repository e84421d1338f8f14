"""The Batch API of the fault server: ``/v1/files`` and ``/v1/batches``, in memory, with faults on demand.

A job's answers are the answers online mode would get for the same request bodies (``completion_body``), so
a test can check that batch and online runs share the cache. Faults, set on ``server.batches.plan``:
failed lines (an error file), an expired job that answered only part of its lines, a job that fails
validation, slow validation, and 5xx answers while polling. Every call is counted in ``server.batches``.

    def test_x(fault_server):
        fault_server.batches.plan.fail_rate = 0.1      # a tenth of the lines fail, on their first submission
        ...
        assert fault_server.batches.uploads == 1 and not fault_server.log   # no online request
"""

from __future__ import annotations

import email.parser
import hashlib
import itertools
import json
import struct
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.plugins.faults import _Handler


@dataclass
class BatchPlan:
    supported: bool = True  # False: every batch route answers 404 (an endpoint without batches)
    validating_polls: int = 0  # polls that still see "validating" (slow validation)
    running_polls: int = 1  # polls that see "in_progress" before the job is final
    fail_rate: float = 0.0  # share of lines that fail on their first submission (error file)
    expire_share: float | None = None  # the first job ends "expired" after answering this share of its lines
    fail_validation: bool = False  # the first job ends "failed" with no output
    poll_faults: list[int] = field(default_factory=list)  # statuses answered to the next polls (e.g. [503, 503])


@dataclass
class BatchState:
    plan: BatchPlan = field(default_factory=BatchPlan)
    files: dict[str, bytes] = field(default_factory=dict)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    uploads: int = 0
    creates: int = 0
    polls: int = 0
    downloads: int = 0
    cancels: int = 0
    lines_answered: int = 0
    line_attempts: dict[str, int] = field(default_factory=dict)  # custom_id → submissions seen
    usage: dict[str, int] = field(default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0})
    _ids: Any = field(default_factory=itertools.count)

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids)}"


def is_batch_route(path: str) -> bool:
    return path.startswith(("/v1/files", "/v1/batches"))


def handle_batch_route(handler: _Handler, method: str) -> None:
    state: BatchState = handler.server.batches
    path = handler.path.split("?", 1)[0].rstrip("/")
    body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0)) if method == "POST" else b""
    with handler.server.lock:
        if not state.plan.supported:
            return handler._error(404, f"no route {path}")
        parts = path.split("/")[2:]  # ["files", id, "content"] or ["batches", id, ...]
        if method == "POST" and parts == ["files"]:
            return handler._json(200, _upload(state, handler.headers.get("Content-Type", ""), body))
        if method == "GET" and len(parts) == 3 and parts[0] == "files" and parts[2] == "content":
            state.downloads += 1
            data = state.files.get(parts[1])
            if data is None:
                return handler._error(404, f"no file {parts[1]}")
            handler.send_response(200)
            handler.send_header("Content-Type", "application/octet-stream")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
            return None
        if method == "POST" and parts == ["batches"]:
            return handler._json(200, _create(state, json.loads(body)))
        if method == "GET" and parts == ["batches"]:
            return handler._json(200, {"object": "list", "data": [], "has_more": False})
        if method == "GET" and len(parts) == 2 and parts[0] == "batches":
            state.polls += 1
            if state.plan.poll_faults:
                return handler._error(state.plan.poll_faults.pop(0), "injected fault while polling")
            job = state.jobs.get(parts[1])
            if job is None:
                return handler._error(404, f"no batch {parts[1]}")
            return handler._json(200, _advance(handler.server, state, job))
        if method == "POST" and len(parts) == 3 and parts[0] == "batches" and parts[2] == "cancel":
            state.cancels += 1
            job = state.jobs[parts[1]]
            job["status"] = "cancelling"
            job["_cancel"] = True
            return handler._json(200, _public(job))
    return handler._error(404, f"no route {path}")


def _upload(state: BatchState, content_type: str, body: bytes) -> dict[str, Any]:
    message = email.parser.BytesParser().parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    data = b""
    for part in message.walk():
        if part.get_param("name", header="content-disposition") == "file":
            data = part.get_payload(decode=True) or b""
    state.uploads += 1
    file_id = state.new_id("file")
    state.files[file_id] = data
    return {
        "id": file_id,
        "object": "file",
        "bytes": len(data),
        "created_at": int(time.time()),
        "filename": "batch.jsonl",
        "purpose": "batch",
        "status": "processed",
    }


def _create(state: BatchState, request: dict[str, Any]) -> dict[str, Any]:
    state.creates += 1
    lines = [json.loads(raw) for raw in state.files[request["input_file_id"]].splitlines() if raw.strip()]
    job = {
        "id": state.new_id("batch"),
        "object": "batch",
        "endpoint": request["endpoint"],
        "errors": None,
        "input_file_id": request["input_file_id"],
        "completion_window": request["completion_window"],
        "status": "validating",
        "output_file_id": None,
        "error_file_id": None,
        "created_at": int(time.time()),
        "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
        "_lines": lines,
        "_polls": 0,
        "_first": not state.jobs,
    }
    state.jobs[job["id"]] = job
    return _public(job)


def _advance(server: Any, state: BatchState, job: dict[str, Any]) -> dict[str, Any]:
    """One poll: validating → in_progress → a final state, where the output and error files are written."""
    plan = state.plan
    job["_polls"] += 1
    if job["status"] in ("validating", "in_progress", "cancelling"):
        if job.get("_cancel"):
            _finish(server, state, job, "cancelled", share=0.0)
        elif job["_polls"] <= plan.validating_polls:
            job["status"] = "validating"
        elif job["_polls"] <= plan.validating_polls + plan.running_polls:
            job["status"] = "in_progress"
        elif job["_first"] and plan.fail_validation:
            job["status"] = "failed"
            job["errors"] = {"object": "list", "data": [{"code": "invalid_request", "message": "injected"}]}
        elif job["_first"] and plan.expire_share is not None:
            _finish(server, state, job, "expired", share=plan.expire_share)
        else:
            _finish(server, state, job, "completed", share=1.0)
    return _public(job)


def _finish(server: Any, state: BatchState, job: dict[str, Any], status: str, share: float) -> None:
    from tests.plugins.faults import completion_body

    lines = job["_lines"]
    answered = lines[: int(len(lines) * share)]
    out, errors = [], []
    for line in answered:
        key = line["custom_id"]
        attempt = state.line_attempts.get(key, 0)
        state.line_attempts[key] = attempt + 1
        draw = hashlib.sha256(f"{key}|{attempt}".encode()).digest()
        if attempt == 0 and struct.unpack(">Q", draw[:8])[0] / 2**64 < state.plan.fail_rate:
            errors.append(
                {
                    "id": f"req-{key[:8]}",
                    "custom_id": key,
                    "response": None,
                    "error": {"code": "server_error", "message": "injected line failure"},
                }
            )
            continue
        kind = "chat" if line["url"].endswith("/chat/completions") else "completion"
        body = completion_body(server, kind, line["body"])
        state.lines_answered += 1
        for name in ("prompt_tokens", "completion_tokens"):
            state.usage[name] += body["usage"][name]
        out.append(
            {
                "id": f"req-{key[:8]}",
                "custom_id": key,
                "error": None,
                "response": {"status_code": 200, "request_id": f"r-{key[:8]}", "body": body},
            }
        )
    job["status"] = status
    job["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(errors)}
    if out:
        job["output_file_id"] = state.new_id("file")
        state.files[job["output_file_id"]] = b"".join(json.dumps(row).encode() + b"\n" for row in out)
    if errors:
        job["error_file_id"] = state.new_id("file")
        state.files[job["error_file_id"]] = b"".join(json.dumps(row).encode() + b"\n" for row in errors)


def _public(job: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in job.items() if not k.startswith("_")}
