"""Records what the reliability suite tried and what held, for ``make reliability`` → docs/RELIABILITY.md.

When ``DATAGEN_RELIABILITY_RESULTS`` names a file, every test's outcome, duration, docstring summary and the
``record_property`` values it set (``tried``: how many cases/points/requests it exercised; ``detail``: one
line of what it saw) are written there as JSON at the end of the session; ``render_report.py`` turns that
into the markdown table. Without the variable this file does nothing.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

_RESULTS_ENV = "DATAGEN_RELIABILITY_RESULTS"
_results: list[dict] = []
_HERE = Path(__file__).resolve().parent


def _summary(item: pytest.Item) -> str:
    doc = getattr(getattr(item, "function", None), "__doc__", None) or ""
    return " ".join(doc.strip().split("\n\n")[0].split())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if not os.environ.get(_RESULTS_ENV) or Path(str(item.path)).resolve().parent != _HERE:
        return
    failed_setup = report.when == "setup" and not report.passed
    if report.when != "call" and not failed_setup:
        return
    if hasattr(report, "wasxfail"):
        status = "xpassed" if report.passed else "xfailed"
    else:
        status = report.outcome
    _results.append(
        {
            "nodeid": report.nodeid,
            "module": item.path.stem,
            "test": getattr(item, "originalname", item.name),
            "case": item.callspec.id if hasattr(item, "callspec") else None,
            "summary": _summary(item),
            "outcome": status,
            "xfail_reason": getattr(report, "wasxfail", None) or None,
            "seconds": round(report.duration, 3),
            "properties": {k: v for k, v in item.user_properties},
        }
    )


def pytest_sessionfinish(session: pytest.Session) -> None:
    target = os.environ.get(_RESULTS_ENV)
    if not target or not _results:
        return
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    Path(target).write_text(
        json.dumps(
            {"finished": time.strftime("%Y-%m-%d %H:%M:%S"), "results": _results},
            ensure_ascii=False,
            indent=1,
            default=str,
        ),
        encoding="utf-8",
    )
