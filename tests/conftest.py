"""Shared fixtures. Session-scoped model/server fixtures live in tests/plugins/ (one file per owner)."""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["tests.plugins.models", "tests.plugins.faults"]

#: A key planted in the environment by tests that check it never leaks anywhere.
PLANTED_API_KEY = "sk-planted-SECRET-7f3a9c1e5b2d4a6f8e0c"


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """Point DATAGEN_HOME at a fresh folder and clear endpoint settings, so no test sees another's state."""
    monkeypatch.setenv("DATAGEN_HOME", str(tmp_path / "datagen-home"))
    for name in list(os.environ):
        if name.startswith("OPENAI_") or name in {"DATAGEN_API_KEY", "DATAGEN_BASE_URL"}:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    yield
