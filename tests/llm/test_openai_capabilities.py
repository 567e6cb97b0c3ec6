"""Protocol mapping against real server processes that each serve ONE endpoint.

The servers (tests/llm/scripted_openai_server.py) are scripted, not models: they reflect
what they received, so these tests check the request mapping and the documented
degradations (docs/servers.md), not generation quality.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from nightowl.config import ModelCapabilities, load_settings
from nightowl.errors import ModelOutputError
from nightowl.llm._openai_protocol import nearest_choice, render_chat
from nightowl.llm.base import ChatMessage, GenerationRequest
from nightowl.llm.openai_compat import OpenAICompatBackend
from nightowl.llm.registry import create_backend
from tests.llm.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
CHAT_ONLY = ModelCapabilities(api="chat", logprobs=False, n=False, constraints="none", echo=False)
COMPLETIONS_ONLY = ModelCapabilities(api="completions", constraints="none")


def _start(api: str) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.llm.scripted_openai_server",
            "--api",
            api,
            "--port",
            str(port),
        ],
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                httpx.get(f"{url}/openapi.json", timeout=1)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"scripted {api} server did not start") from None
                time.sleep(0.1)
        yield f"{url}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def chat_url() -> Iterator[str]:
    yield from _start("chat")


@pytest.fixture(scope="module")
def completions_url() -> Iterator[str]:
    yield from _start("completions")


def _chat(url: str) -> OpenAICompatBackend:
    return OpenAICompatBackend(
        name="chat-only", base_url=url, capabilities=CHAT_ONLY, max_retries=0
    )


def _comp(url: str, **caps: object) -> OpenAICompatBackend:
    c = COMPLETIONS_ONLY.model_copy(update=caps)
    return OpenAICompatBackend(name="completions-only", base_url=url, capabilities=c, max_retries=0)


# -- a chat-only server -------------------------------------------------------------
async def test_servers_really_serve_one_endpoint(chat_url: str, completions_url: str):
    async with httpx.AsyncClient() as http:
        r1 = await http.post(f"{chat_url}/completions", json={"prompt": "x"})
        r2 = await http.post(f"{completions_url}/chat/completions", json={"messages": []})
    assert r1.status_code == 404 and r2.status_code == 404


async def test_prompt_becomes_one_user_message(chat_url: str):
    backend = _chat(chat_url)
    prompt = "Observation: a door.\nAction:"
    r = await backend.generate(GenerationRequest(prompt=prompt, max_tokens=8, stop=("\n",)))
    seen = json.loads(r.texts[0])
    assert seen["messages"] == [{"role": "user", "content": prompt}]
    assert r.usage.prompt_tokens == 4 and r.usage.completion_tokens > 0
    await backend.aclose()


async def test_n_without_server_support_is_sequential_calls(chat_url: str):
    backend = _chat(chat_url)
    r = await backend.generate(GenerationRequest(prompt="hello there", n=3, temperature=1.0))
    calls = [json.loads(t)["call"] for t in r.texts]
    assert len(calls) == 3 and calls == sorted(set(calls))  # three distinct HTTP calls
    assert backend.attempts == 3
    assert r.usage.prompt_tokens == 3 * 2
    await backend.aclose()


async def test_logprobs_not_supported_gives_none(chat_url: str):
    backend = _chat(chat_url)
    r = await backend.generate(GenerationRequest(prompt="hi", logprobs=True, top_logprobs=2))
    assert r.completions[0].logprobs is None
    with pytest.raises(NotImplementedError, match="no prompt logprobs"):
        await backend.score_continuations("The capital of France is", [" Paris"])
    await backend.aclose()


async def test_choices_without_constraints_parse_to_nearest(chat_url: str):
    backend = _chat(chat_url)
    msgs = (ChatMessage(role="user", content="What is the capital of France?"),)
    r = await backend.generate(GenerationRequest(messages=msgs, choices=("London", "Paris"), n=2))
    assert r.texts == ["Paris", "Paris"]
    assert r.completions[0].raw_text == "Hmm, I would say paris."
    with pytest.raises(ModelOutputError, match="close to none"):
        await backend.generate(GenerationRequest(prompt="pick one", choices=("xylophone", "zebra")))
    await backend.aclose()


async def test_json_schema_without_support_extracts_json(chat_url: str):
    backend = _chat(chat_url)
    r = await backend.generate(
        GenerationRequest(prompt="Give JSON", json_schema={"type": "object"})
    )
    assert json.loads(r.texts[0]) == {"answer": 42, "ok": True}
    assert r.completions[0].raw_text is not None and r.completions[0].raw_text.startswith("Sure!")
    await backend.aclose()


async def test_frontier_api_entry_works_against_a_chat_only_server(chat_url, monkeypatch):
    """`--teacher frontier-api`: the shipped entry says chat-only; callers send prompts."""
    monkeypatch.setenv("TEST_SCRIPTED_KEY", "k")
    settings = load_settings(
        models={
            "frontier-api": {"params": {"base_url": chat_url, "api_key_env": "TEST_SCRIPTED_KEY"}}
        }
    )
    spec = settings.model("frontier-api")
    assert spec.capabilities.api == "chat" and spec.params["model"] == "gpt-4o"
    backend = create_backend("frontier-api", spec, settings)
    r = await backend.generate(GenerationRequest(prompt="Task: open the door.\nAction:"))
    assert json.loads(r.texts[0])["messages"][0]["role"] == "user"
    await backend.aclose()


# -- a completions-only server ------------------------------------------------------
async def test_messages_rendered_with_chatml(completions_url: str):
    backend = _comp(completions_url)
    msgs = (
        ChatMessage(role="system", content="Be brief."),
        ChatMessage(role="user", content="Hi"),
    )
    r = await backend.generate(GenerationRequest(messages=msgs, stop=("\n\n",)))
    seen = json.loads(r.texts[0])
    assert seen["prompt"] == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert seen["stop"] == ["\n\n", "<|im_end|>"]
    await backend.aclose()


async def test_messages_rendered_as_plain_transcript(completions_url: str):
    backend = _comp(completions_url, chat_template="plain")
    msgs = (ChatMessage(role="user", content="Hi"), ChatMessage(role="assistant", content="Yo"))
    seen = json.loads((await backend.generate(GenerationRequest(messages=msgs))).texts[0])
    assert seen["prompt"] == "User: Hi\n\nAssistant: Yo\n\nAssistant:"
    assert "\nUser:" in seen["stop"]
    await backend.aclose()


async def test_n_logprobs_and_cached_tokens_in_one_call(completions_url: str):
    backend = _comp(completions_url)
    req = GenerationRequest(prompt="one two three four", n=2, logprobs=True, temperature=1.0)
    a = await backend.generate(req)
    b = await backend.generate(req)
    assert len(a.completions) == 2 and backend.attempts == 2  # n served in one call each
    assert all(c.logprobs for c in a.completions)
    assert b.usage.prompt_tokens == 4 and b.usage.cached_prompt_tokens == 4
    await backend.aclose()


async def test_choices_without_constraints_are_scored(completions_url: str):
    backend = _comp(completions_url)
    req = GenerationRequest(prompt="The capital of France is", choices=("London", "Paris"))
    r = await backend.generate(req)
    assert r.texts == ["Paris"] and r.completions[0].raw_text is None
    assert r.usage.prompt_tokens == 2 * 6  # one echo-scored prompt per choice
    sampled = await backend.generate(
        GenerationRequest(
            prompt="The capital of France is",
            choices=("London", "Paris"),
            n=40,
            temperature=1.0,
            seed=0,
        )  # fmt: skip
    )
    counts = Counter(sampled.texts)
    # softmax over scripted logprobs (-0.1 vs -2.0): Paris ~87 %
    assert counts["Paris"] > counts["London"] > 0
    scored = await backend.score_continuations("go", [" north", " south"])
    assert scored.logprobs == (-0.1, -2.0) and scored.token_counts == (1, 1)
    await backend.aclose()


def test_nearest_choice_rules():
    assert nearest_choice(" Paris.", ("London", "Paris")) == "Paris"
    assert nearest_choice("I'd go north now", ("go", "go north")) == "go north"
    assert nearest_choice("opn door", ("open door", "eat apple")) == "open door"
    assert nearest_choice("banana", ("open door", "eat apple")) is None


def test_custom_jinja_template():
    text, stops = render_chat(
        (ChatMessage(role="user", content="x"),),
        "{% for m in messages %}[{{ m.content }}]{% endfor %}",
    )
    assert text == "[x]" and stops == ()


async def test_constrained_answer_keeps_a_choices_leading_space():
    """Tiers send continuations (" take coin"); a constrained answer equals one exactly."""

    def scripted(request: httpx.Request) -> httpx.Response:  # a scripted grammar server
        body = json.loads(request.content)
        assert body["grammar"] == 'root ::= " take coin" | " go north"'
        return httpx.Response(200, json={"choices": [{"index": 0, "text": " take coin"}]})

    backend = OpenAICompatBackend(
        name="g",
        base_url="http://scripted/v1",
        capabilities=ModelCapabilities(constraints="grammar"),
        transport=httpx.MockTransport(scripted),
    )
    r = await backend.generate(GenerationRequest(prompt="> ", choices=(" take coin", " go north")))
    assert r.texts == [" take coin"] and r.completions[0].raw_text is None
    await backend.aclose()
