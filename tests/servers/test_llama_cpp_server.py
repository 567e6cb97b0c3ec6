"""nightowl against a REAL third-party server: llama-cpp-python's OpenAI server serving the
embedded SmolLM2 GGUF (opt-in: ``make test-servers`` builds and starts it and sets
NIGHTOWL_TEST_LLAMA_URL). Uses the shipped ``llama-cpp-local`` registry entry, so these
tests also check that its capabilities describe the server truthfully.
"""

from __future__ import annotations

import os

import httpx
import pytest

from nightowl.config import load_settings
from nightowl.llm.base import ChatMessage, GenerationRequest
from nightowl.llm.openai_compat import OpenAICompatBackend
from nightowl.llm.registry import create_backend

pytestmark = pytest.mark.servers
FRANCE = (ChatMessage(role="user", content="What is the capital of France?"),)


@pytest.fixture(scope="module")
def url() -> str:
    value = os.environ.get("NIGHTOWL_TEST_LLAMA_URL", "")
    if not value:
        pytest.skip("NIGHTOWL_TEST_LLAMA_URL is not set (make test-servers starts the server)")
    return value


def _backend(url: str, **caps: object) -> OpenAICompatBackend:
    settings = load_settings(models={"llama-cpp-local": {"params": {"base_url": url}}})
    spec = settings.model("llama-cpp-local")
    if caps:
        spec = spec.model_copy(update={"capabilities": spec.capabilities.model_copy(update=caps)})
    backend = create_backend("llama-cpp-local", spec, settings)
    assert isinstance(backend, OpenAICompatBackend)
    return backend


async def test_what_the_server_supports(url: str):
    """Raw protocol probe; the registry entry's capabilities must match these facts."""
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        base = {"model": "smollm2", "max_tokens": 4, "temperature": 1.0, "seed": 1}
        r = (await http.post("/completions", json={**base, "prompt": "Hi", "n": 3})).json()
        n_choices = len(r["choices"])
        lp = (await http.post("/completions", json={**base, "prompt": "Hi", "logprobs": 1})).json()
        has_logprobs = bool(lp["choices"][0]["logprobs"]["token_logprobs"])
        cached = lp["usage"].get("prompt_tokens_details")
        two = await http.post("/completions", json={**base, "prompt": ["a", "b"]})
        # echo scoring is right only if the prompt logprob of " Paris" equals the logprob
        # of generating " Paris" at the same position
        greedy = {"model": "smollm2", "max_tokens": 1, "temperature": 0, "logprobs": 1}
        gen = (
            await http.post("/completions", json={**greedy, "prompt": "The capital of France is"})
        ).json()
        echo = (
            await http.post(
                "/completions",
                json={**greedy, "prompt": "The capital of France is Paris", "echo": True},
            )
        ).json()
        gen_lp = gen["choices"][0]["logprobs"]["token_logprobs"][0]
        echo_lp = echo["choices"][0]["logprobs"]["token_logprobs"][5]
        assert gen["choices"][0]["text"] == " Paris"
        js = await http.post(
            "/chat/completions",
            json={
                **base,
                "messages": [{"role": "user", "content": "JSON please"}],
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "object"}},
                },
            },
        )
    print(
        f"\nllama.cpp server: n=3 -> {n_choices} choice(s); logprobs={has_logprobs}; "
        f"prompt_tokens_details={cached}; prompt list of 2 -> HTTP {two.status_code}; "
        f"OpenAI json_schema response_format -> HTTP {js.status_code}; "
        f"log p(' Paris'): generated {gen_lp:.3f}, echoed {echo_lp:.3f}"
    )
    caps = _backend(url).capabilities
    assert caps.n == (n_choices == 3)
    assert caps.logprobs == has_logprobs
    assert caps.prompt_lists == (two.status_code == 200)
    assert caps.prefix_caching == bool(cached)
    assert caps.echo == (abs(gen_lp - echo_lp) < 0.05)


async def test_n_gt_1_is_sequential_calls(url: str):
    backend = _backend(url)
    r = await backend.generate(
        GenerationRequest(prompt="Once upon a time", n=3, max_tokens=8, temperature=1.0, seed=7)
    )
    assert len(r.completions) == 3 and backend.attempts == 3
    assert len(set(r.texts)) > 1  # seeds 7, 8, 9 give different samples
    await backend.aclose()


async def test_logprobs_chat_and_completion(url: str):
    backend = _backend(url)
    c = await backend.generate(
        GenerationRequest(prompt="The capital of France is", max_tokens=4, logprobs=True)
    )
    assert c.completions[0].logprobs and len(c.completions[0].logprobs) == c.usage.completion_tokens
    m = await backend.generate(GenerationRequest(messages=FRANCE, max_tokens=6, logprobs=True))
    lps = m.completions[0].logprobs
    print(f"\nchat logprobs returned: {lps is not None}")
    await backend.aclose()


@pytest.mark.parametrize("shape", ["prompt", "messages"])
async def test_choices_constrained_by_grammar(url: str, shape: str):
    backend = _backend(url)
    choices = (" London", " Paris", " go north")  # tiers send continuations: leading spaces
    kw = {"prompt": "The capital of France is"} if shape == "prompt" else {"messages": FRANCE}
    r = await backend.generate(
        GenerationRequest(**kw, choices=choices, n=2, temperature=1.0, seed=3)  # type: ignore[arg-type]
    )
    assert set(r.texts) <= set(choices)
    assert all(c.raw_text is None for c in r.completions)  # the server constrained them
    await backend.aclose()


async def test_choices_without_constraints_and_without_scoring(url: str):
    """constraints off, echo off: free answer mapped to the nearest choice; no scoring."""
    backend = _backend(url, constraints="none")
    r = await backend.generate(
        GenerationRequest(prompt="The capital of France is", choices=("banana", "Paris"))
    )
    assert r.texts == ["Paris"] and r.completions[0].raw_text is not None
    with pytest.raises(NotImplementedError):
        await backend.score_continuations("The capital of France is", [" banana", " Paris"])
    await backend.aclose()


async def test_json_schema_on_chat(url: str):
    backend = _backend(url)
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    }
    r = await backend.generate(
        GenerationRequest(messages=FRANCE, json_schema=schema, max_tokens=24)
    )
    import json

    assert isinstance(json.loads(r.texts[0]), dict)
    await backend.aclose()


async def test_token_accounting(url: str):
    """Usage comes from the model's tokenizer; the server reports no cached tokens."""
    from nightowl.llm.registry import build_backend

    backend = _backend(url)
    req = GenerationRequest(messages=FRANCE, max_tokens=8)
    a = await backend.generate(req)
    b = await backend.generate(req)
    local = build_backend("smollm2", load_settings())
    assert a.usage.prompt_tokens == b.usage.prompt_tokens
    # the server renders the GGUF's own chat template, as the in-process backend does
    expected = (await local.generate(GenerationRequest(messages=FRANCE, max_tokens=1))).usage
    assert abs(a.usage.prompt_tokens - expected.prompt_tokens) <= 1  # BOS handling only
    assert b.usage.cached_prompt_tokens == 0  # not reported: billed as uncached
    print(
        f"\nprompt_tokens={a.usage.prompt_tokens} "
        f"(in-process: {expected.prompt_tokens}); "
        f"latency 1st {a.latency_s:.2f}s, 2nd {b.latency_s:.2f}s (server-side prefix reuse)"
    )
    await backend.aclose()
