"""`datagen serve` beyond the basics (issue 20, "Serve"): streaming as the openai client reads it, response_format
by constrained decoding, the extra sampling parameters, 400 for anything it would otherwise ignore, embeddings."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.plugins.models import TINY_MODEL

CHAT = [{"role": "user", "content": "Tell me a story."}]


@pytest.fixture
def client(tiny_server_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=tiny_server_url, api_key="unused", max_retries=0)


@pytest.mark.parametrize("stop", [None, ["e"]])
def test_streaming_chat_yields_the_same_text_as_non_streaming(client, stop):
    """At temperature 0 the streamed deltas add up to exactly the non-streamed answer (with a stop string too)."""
    kwargs = {"model": TINY_MODEL, "messages": CHAT, "max_tokens": 24, "temperature": 0, "stop": stop}
    whole = client.chat.completions.create(**kwargs)
    stream = client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(deltas) == whole.choices[0].message.content
    assert len(deltas) > 1 or len(whole.choices[0].message.content) < 3  # it really streamed, token by token
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [whole.choices[0].finish_reason]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert all(c.model == TINY_MODEL and c.object == "chat.completion.chunk" for c in chunks)


def test_streaming_completions_with_n_and_prompts(client):
    """Legacy completions stream too, each choice under its index (prompt_i * n + j)."""
    kwargs = {"model": TINY_MODEL, "prompt": ["Once", "Then"], "max_tokens": 8, "temperature": 0, "n": 2}
    whole = client.completions.create(**kwargs)
    texts: dict[int, str] = {}
    for chunk in client.completions.create(**kwargs, stream=True):
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
    assert texts == {c.index: c.text for c in whole.choices}


def test_sampling_parameters_are_honoured(client):
    """top_k=1 and min_p=1 sample greedily even at temperature 1.5; repetition_penalty changes the greedy text."""
    greedy = client.chat.completions.create(model=TINY_MODEL, messages=CHAT, max_tokens=12, temperature=0)
    top1 = client.chat.completions.create(
        model=TINY_MODEL, messages=CHAT, max_tokens=12, temperature=1.5, seed=3, extra_body={"top_k": 1}
    )
    minp = client.chat.completions.create(
        model=TINY_MODEL, messages=CHAT, max_tokens=12, temperature=1.5, seed=4, extra_body={"min_p": 1.0}
    )
    assert top1.choices[0].message.content == greedy.choices[0].message.content
    assert minp.choices[0].message.content == greedy.choices[0].message.content
    penalised = client.chat.completions.create(
        model=TINY_MODEL, messages=CHAT, max_tokens=24, temperature=0, extra_body={"repetition_penalty": 5.0}
    )
    assert penalised.choices[0].message.content != greedy.choices[0].message.content


def test_logit_bias_forces_the_token(client, tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    token = tokenizer.encode(" banana", add_special_tokens=False)[0]
    reply = client.completions.create(
        model=TINY_MODEL, prompt="x", max_tokens=3, temperature=0, logit_bias={str(token): 100}
    )
    assert reply.choices[0].text == tokenizer.decode([token] * 3)


@pytest.mark.parametrize(
    "body, param",
    [
        ({"logprobs": True}, "logprobs"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"guided_regex": "a+"}, "guided_regex"),
        ({"top_k": -1}, "top_k"),
        ({"min_p": 2}, "min_p"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"logit_bias": {"abc": 1}}, "logit_bias"),
        ({"logit_bias": {"5": 500}}, "logit_bias"),
        ({"response_format": {"type": "xml"}}, "response_format"),
    ],
)
def test_unsupported_or_bad_parameters_are_400_naming_them(tiny_server_url, body, param):
    reply = httpx.post(
        tiny_server_url + "/chat/completions",
        trust_env=False,
        timeout=30,
        json={"model": TINY_MODEL, "messages": CHAT, "max_tokens": 2, **body},
    )
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == param


SCHEMA = {
    "type": "object",
    "properties": {
        "colour": {"type": "string", "enum": ["red", "green", "blue"]},
        "ripe": {"type": "boolean"},
        "kind": {"type": "string", "enum": ["apple", "pear"]},
    },
    "required": ["colour", "ripe", "kind"],
    "additionalProperties": False,
}


def test_json_schema_always_returns_valid_json_for_the_schema(client):
    """Constrained decoding: a random model's every sample parses and validates against the schema."""
    fmt = {"type": "json_schema", "json_schema": {"name": "fruit", "schema": SCHEMA}}
    reply = client.chat.completions.create(
        model=TINY_MODEL, messages=CHAT, max_tokens=80, temperature=1.0, seed=7, n=6, response_format=fmt
    )
    for choice in reply.choices:
        assert choice.finish_reason == "stop", choice.message.content
        value = json.loads(choice.message.content)
        assert set(value) == {"colour", "ripe", "kind"}
        assert value["colour"] in ("red", "green", "blue") and value["kind"] in ("apple", "pear")
        assert isinstance(value["ripe"], bool)


def test_json_object_returns_a_json_object(client):
    reply = client.chat.completions.create(
        model=TINY_MODEL, messages=CHAT, max_tokens=200, temperature=0, response_format={"type": "json_object"}
    )
    content = reply.choices[0].message.content
    if reply.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(content), dict)
    else:  # the budget ran out inside the object: still a valid prefix of one
        assert content.lstrip().startswith("{")


def test_embeddings_for_the_shipped_encoder(client):
    """/v1/embeddings answers with the bundled MiniLM: 384-d unit vectors, similar texts closer, base64 too."""
    import base64

    import numpy as np

    reply = client.embeddings.create(model="all-minilm-l6-v2", input=["a red apple", "a green apple", "tax law"])
    vectors = np.array([d.embedding for d in reply.data])
    assert vectors.shape == (3, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    assert reply.usage.prompt_tokens > 3
    raw = client.embeddings.create(model="all-minilm-l6-v2", input="a red apple", encoding_format="float")
    assert np.allclose(raw.data[0].embedding, vectors[0], atol=1e-5)
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="all-minilm-l6-v2", input="x", dimensions=12)
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model=TINY_MODEL, input="x")
    b64 = httpx.post(
        str(client.base_url) + "embeddings",
        trust_env=False,
        timeout=60,
        json={"model": "all-minilm-l6-v2", "input": "a red apple", "encoding_format": "base64"},
    ).json()
    decoded = np.frombuffer(base64.b64decode(b64["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, vectors[0], atol=1e-5)
