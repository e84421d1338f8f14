"""StageLog: what a resumed run treats as settled."""

from __future__ import annotations

from datagen.checkpoint import StageLog


def _settled(row: dict) -> bool:
    return "error" not in row


def test_a_keys_last_row_decides_whether_it_is_settled(tmp_path):
    with StageLog(tmp_path, "steps") as log:
        log.append({"key": "failed-then-answered", "error": "timeout"})
        log.append({"key": "failed-then-answered", "text": "late answer"})
        log.append({"key": "answered-then-failed", "text": "stale answer"})  # asked again, then failed
        log.append({"key": "answered-then-failed", "error": "server_error"})
        log.append({"key": "answered", "text": "answer"})

    resumed = StageLog(tmp_path, "steps", keep=_settled)
    assert resumed.done == {
        "failed-then-answered": {"key": "failed-then-answered", "text": "late answer"},
        "answered": {"key": "answered", "text": "answer"},
    }
    assert set(StageLog(tmp_path, "steps").done) == {"failed-then-answered", "answered-then-failed", "answered"}
