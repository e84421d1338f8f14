"""The project's own client against the real embedded model over real HTTP: the path every generator uses."""

from __future__ import annotations

import asyncio

import pytest

from datagen.llm.client import LLMClient, LLMConfig, SamplingParams


@pytest.mark.slow
def test_project_client_gets_a_real_completion_from_the_embedded_server(embedded_server_url, tmp_path):
    async def go():
        cfg = LLMConfig(base_urls=(embedded_server_url,), cache_path=tmp_path / "cache.sqlite", timeout=600)
        async with LLMClient(cfg) as llm:
            chat = await llm.chat(
                [{"role": "user", "content": "What is the capital of France?"}],
                SamplingParams(temperature=0, max_tokens=24),
            )
            text = await llm.complete("1. Sort a list of numbers.\n2.", SamplingParams(temperature=0, max_tokens=16))
            again = await llm.chat(
                [{"role": "user", "content": "What is the capital of France?"}],
                SamplingParams(temperature=0, max_tokens=24),
            )
            return chat, text, again, llm.ledger

    chat, text, again, ledger = asyncio.run(go())
    assert chat.text.strip() and "paris" in chat.text.lower()
    assert chat.model == "smollm2-135m-instruct" and chat.prompt_tokens > 5 and 0 < chat.completion_tokens <= 24
    assert text.text.strip() and text.finish_reason in ("stop", "length")
    assert again.cached and again.text == chat.text and ledger.succeeded == 2 and ledger.cached == 1
