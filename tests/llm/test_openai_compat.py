"""OpenAICompatBackend against nightowl's own OpenAI-protocol server (real model on
127.0.0.1), checked against the official `openai` client; retries and errors with
httpx.MockTransport."""

from __future__ import annotations

import json
import math
import time

import httpx
import pytest

from nightowl.config import ModelSpec, load_settings
from nightowl.errors import ConfigError, ModelError, ModelOutputError
from nightowl.llm.base import ChatMessage, GenerationRequest
from nightowl.llm.openai_compat import OpenAICompatBackend, parse_usage
from nightowl.llm.registry import create_backend
from nightowl.llm.transformers import TransformersBackend
from tests.llm.test_score_paths import PLAIN_TOL

FRANCE = (ChatMessage(role="user", content="What is the capital of France?"),)


@pytest.fixture
def client(server_url: str) -> OpenAICompatBackend:
    return OpenAICompatBackend(name="smollm2", base_url=server_url, max_retries=1)


async def test_models_endpoint(server_url: str):
    async with httpx.AsyncClient() as http:
        data = (await http.get(f"{server_url}/models")).json()
    assert [m["id"] for m in data["data"]] == ["smollm2"]


async def test_chat_same_as_in_process(client: OpenAICompatBackend, smollm2: TransformersBackend):
    req = GenerationRequest(messages=FRANCE, max_tokens=24)
    remote = await client.generate(req)
    local = await smollm2.generate(req)
    assert remote.texts == local.texts
    assert remote.usage.prompt_tokens == local.usage.prompt_tokens
    assert remote.usage.completion_tokens == local.usage.completion_tokens
    # the second call found the prompt in the (shared) prefix cache
    assert local.usage.cached_prompt_tokens == local.usage.prompt_tokens - 1
    assert remote.completions[0].finish_reason == "stop"
    await client.aclose()


async def test_completion_n_logprobs_seed(client: OpenAICompatBackend):
    req = GenerationRequest(
        prompt="The capital of France is", n=2, max_tokens=5, temperature=1.0, seed=3,
        logprobs=True, top_logprobs=2,
    )  # fmt: skip
    a = await client.generate(req)
    b = await client.generate(req)
    assert len(a.completions) == 2 and a.texts == b.texts
    for c in a.completions:
        assert c.logprobs is not None and len(c.logprobs) >= 1
        assert len(c.logprobs[0].top) == 2
    assert a.usage.prompt_tokens == 5


@pytest.mark.parametrize("style", ["structured_outputs", "guided_choice"])
async def test_choices_over_http(server_url: str, style: str):
    backend = OpenAICompatBackend(name="smollm2", base_url=server_url, choice_style=style)  # type: ignore[arg-type]
    r = await backend.generate(
        GenerationRequest(
            messages=FRANCE, choices=("London", "Paris", "go north"), n=3, temperature=1.0, seed=2
        )  # fmt: skip
    )
    assert set(r.texts) <= {"London", "Paris", "go north"}
    greedy = await backend.generate(GenerationRequest(messages=FRANCE, choices=("London", "Paris")))
    assert greedy.texts == ["Paris"]


async def test_score_continuations_via_echo(client: OpenAICompatBackend, smollm2):
    conts = [" Paris", " banana", " the city of Paris"]
    remote = await client.score_continuations("The capital of France is", conts)
    local = await smollm2.score_continuations("The capital of France is", conts)
    # echo is one plain forward over prompt + continuation (as vLLM's prompt logprobs):
    # held to the dtype's plain-forward bound (tests/llm/test_score_paths.py)
    for a, b in zip(remote.logprobs, local.logprobs, strict=True):
        assert math.isclose(a, b, abs_tol=PLAIN_TOL[smollm2.dtype])
    assert remote.token_counts == local.token_counts


async def test_unsupported_json_schema_is_a_clear_400(client: OpenAICompatBackend):
    with pytest.raises(ModelError) as err:
        await client.generate(GenerationRequest(messages=FRANCE, json_schema={"type": "object"}))
    assert err.value.status == 400
    assert "json_schema" in str(err.value)
    assert client.attempts == 1  # 4xx is not retried


async def test_wrong_model_name_is_400(server_url: str):
    backend = OpenAICompatBackend(name="x", base_url=server_url, model="gpt-nope")
    with pytest.raises(ModelError, match="not served here") as err:
        await backend.generate(GenerationRequest(messages=FRANCE, max_tokens=2))
    assert err.value.status == 400


async def test_official_openai_client_same_answers(server_url: str, client: OpenAICompatBackend):
    from openai import AsyncOpenAI

    oa = AsyncOpenAI(base_url=server_url, api_key="unused")
    chat = await oa.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=24,
        temperature=0,
    )
    ours = await client.generate(GenerationRequest(messages=FRANCE, max_tokens=24))
    assert chat.choices[0].message.content == ours.texts[0]
    assert chat.usage is not None
    assert chat.usage.prompt_tokens == ours.usage.prompt_tokens
    assert chat.usage.completion_tokens == ours.usage.completion_tokens
    assert chat.choices[0].finish_reason == "stop"

    comp = await oa.completions.create(
        model="smollm2", prompt="The capital of France is", max_tokens=4, n=2,
        temperature=0.8, seed=5, logprobs=1,
    )  # fmt: skip
    ours2 = await client.generate(
        GenerationRequest(
            prompt="The capital of France is",
            max_tokens=4,
            n=2,
            temperature=0.8,
            seed=5,
            logprobs=True,
            top_logprobs=1,
        )  # fmt: skip
    )
    assert [c.text for c in comp.choices] == ours2.texts
    assert comp.choices[0].logprobs is not None and comp.choices[0].logprobs.token_logprobs

    constrained = await oa.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        extra_body={"structured_outputs": {"choice": ["London", "Paris"]}},
    )
    assert constrained.choices[0].message.content == "Paris"
    await oa.close()


# -- retries and errors (no model needed) -------------------------------------------

_OK = {
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 7, "completion_tokens": 1,
              "prompt_tokens_details": {"cached_tokens": 4}},
}  # fmt: skip


def _mock(handler) -> OpenAICompatBackend:
    return OpenAICompatBackend(
        name="m", base_url="http://model.test/v1", max_retries=3, backoff_s=0.01,
        backoff_max_s=0.05, transport=httpx.MockTransport(handler), api_key="k",
    )  # fmt: skip


async def test_retry_on_429_then_success():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) < 3:
            return httpx.Response(429, headers={"retry-after": "0"}, json={"error": "slow down"})
        return httpx.Response(200, json=_OK)

    backend = _mock(handler)
    r = await backend.generate(GenerationRequest(messages=FRANCE, n=1, seed=1, stop=("\n",)))
    assert r.texts == ["hi"]
    assert r.usage.cached_prompt_tokens == 4 and r.usage.prompt_tokens == 7
    assert backend.attempts == 3
    body = json.loads(seen[-1].content)
    assert body["messages"][0]["content"] == "What is the capital of France?"
    assert body["seed"] == 1 and body["stop"] == ["\n"] and body["n"] == 1
    assert seen[-1].headers["authorization"] == "Bearer k"
    assert seen[-1].url.path == "/v1/chat/completions"


async def test_retry_on_5xx_is_bounded():
    backend = _mock(lambda r: httpx.Response(503, text="overloaded"))
    started = time.perf_counter()
    with pytest.raises(ModelError, match="after 4 attempts") as err:
        await backend.generate(GenerationRequest(prompt="x"))
    assert err.value.status == 503
    assert backend.attempts == 4
    assert time.perf_counter() - started < 2


async def test_400_is_a_clear_error_without_retry():
    backend = _mock(
        lambda r: httpx.Response(400, json={"error": {"message": "max_tokens is too large"}})
    )
    with pytest.raises(ModelError) as err:
        await backend.generate(GenerationRequest(prompt="x"))
    assert err.value.status == 400
    assert "max_tokens is too large" in str(err.value)
    assert "max_tokens is too large" in err.value.body
    assert backend.attempts == 1


async def test_unreachable_server_is_one_clear_error():
    from tests.llm.conftest import free_port

    backend = OpenAICompatBackend(
        name="dead", base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=1, backoff_s=0.01
    )
    with pytest.raises(ModelError, match="unreachable at http://127.0.0.1"):
        await backend.generate(GenerationRequest(prompt="x"))
    assert backend.attempts == 2


async def test_choice_outside_allowed_is_an_output_error():
    backend = _mock(lambda r: httpx.Response(200, json=_OK))
    with pytest.raises(ModelOutputError, match="not one of the allowed choices"):
        await backend.generate(GenerationRequest(messages=FRANCE, choices=("a", "b")))


async def test_json_schema_choice_style_unwraps_and_request_shapes():
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        content = json.dumps({"choice": "b"}) if "response_format" in body else "{}"
        data = json.loads(json.dumps(_OK))
        data["choices"][0]["message"]["content"] = content
        return httpx.Response(200, json=data)

    backend = OpenAICompatBackend(
        name="m", base_url="https://api.openai.com/v1", transport=httpx.MockTransport(handler)
    )
    assert backend.choice_style == "json_schema"
    r = await backend.generate(GenerationRequest(messages=FRANCE, choices=("a", "b")))
    assert r.texts == ["b"]
    schema = seen[0]["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["choice"]["enum"] == ["a", "b"]
    await backend.generate(
        GenerationRequest(
            messages=FRANCE, json_schema={"type": "object"}, logprobs=True, top_logprobs=2
        )  # fmt: skip
    )
    assert seen[1]["response_format"]["type"] == "json_schema"
    assert seen[1]["logprobs"] is True and seen[1]["top_logprobs"] == 2


def test_parse_usage_variants():
    assert parse_usage(None).prompt_tokens == 0
    u = parse_usage({"prompt_tokens": 3, "completion_tokens": 2, "prompt_tokens_details": None})
    assert (u.prompt_tokens, u.cached_prompt_tokens, u.completion_tokens) == (3, 0, 2)


def test_registry_entry_api_key_and_params(monkeypatch):
    settings = load_settings()
    spec = ModelSpec(
        backend="openai",
        params={
            "base_url": "https://api.openai.com/v1",
            "model": "gpt-4o",
            "api_key_env": "NO_KEY_X",
        },
    )
    monkeypatch.delenv("NO_KEY_X", raising=False)
    with pytest.raises(ConfigError, match=r"\$NO_KEY_X"):
        create_backend("hosted", spec, settings)
    monkeypatch.setenv("NO_KEY_X", "sk-test")
    backend = create_backend("hosted", spec, settings)
    assert isinstance(backend, OpenAICompatBackend) and backend.api_key == "sk-test"
    with pytest.raises(ConfigError, match="unknown openai params"):
        create_backend(
            "bad", ModelSpec(backend="openai", params={"base_url": "http://x", "oops": 1}), settings
        )
