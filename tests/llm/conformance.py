"""Conformance checks every `ModelBackend` must pass (the fakes, the embedded model, the
OpenAI-protocol client against a real server). Reused by other subsystems' tests via
``check_backend(backend)``."""

from __future__ import annotations

from nightowl.llm.base import ChatMessage, GenerationRequest, GenerationResult, ModelBackend

CHAT = (ChatMessage(role="user", content="Say hello."),)


def _check_result(result: GenerationResult, n: int) -> None:
    assert len(result.completions) == n
    for c in result.completions:
        assert isinstance(c.text, str)
        assert c.finish_reason in ("stop", "length", "error")
    u = result.usage
    assert u.prompt_tokens > 0
    assert 0 <= u.cached_prompt_tokens <= u.prompt_tokens
    assert u.completion_tokens >= 0
    assert result.latency_s >= 0


async def check_backend(backend: ModelBackend, *, scoring: bool = True) -> None:
    """Chat and raw prompts, n samples, max_tokens, stop, logprobs, choices, scoring."""
    r = await backend.generate(GenerationRequest(messages=CHAT, max_tokens=8))
    _check_result(r, 1)
    r = await backend.generate(
        GenerationRequest(prompt="Once upon a time", n=3, max_tokens=4, temperature=1.0, seed=1)
    )
    _check_result(r, 3)
    for c in r.completions:
        assert c.finish_reason == "length" or r.usage.completion_tokens <= 3 * 4
    r = await backend.generate(GenerationRequest(prompt="Count: 1, 2, 3,", max_tokens=2))
    _check_result(r, 1)
    assert r.usage.completion_tokens <= 2
    r = await backend.generate(
        GenerationRequest(messages=CHAT, max_tokens=16, stop=("\n", "."), logprobs=True)
    )
    _check_result(r, 1)
    c = r.completions[0]
    assert "\n" not in c.text and "." not in c.text
    assert c.logprobs is not None and all(t.logprob <= 1e-6 for t in c.logprobs)
    choices = ("alpha", "beta", "gamma")
    r = await backend.generate(
        GenerationRequest(messages=CHAT, choices=choices, n=2, temperature=1.0, seed=3)
    )
    _check_result(r, 2)
    assert set(r.texts) <= set(choices), "choices= must only return allowed strings"
    if scoring:
        s = await backend.score_continuations("One, two,", [" three", " banana split"])
        assert len(s.logprobs) == 2 and all(v <= 1e-6 for v in s.logprobs)
        assert all(n >= 1 for n in s.token_counts)
