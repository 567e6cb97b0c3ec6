"""VLLMBackend's control logic on vLLM's async-engine interface, without vLLM.

`ScriptedAsyncEngine` is a scripted fake of ``AsyncLLMEngine.generate/abort`` (named as
such): it checks that concurrent callers reach the engine together (no global lock, so
vLLM can batch them), that a cancelled caller aborts its request, and that outputs map
to results. The real engine runs in the ``gpu``-marked test in test_cli_and_registry.py.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from nightowl.llm.base import ChatMessage, GenerationRequest
from nightowl.llm.vllm import VLLMBackend, vllm_available


class ScriptedTokenizer:
    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) for c in text]

    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=False):  # noqa: ANN001
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"


class ScriptedAsyncEngine:
    """Replies "ok:<prompt tail>" after ``delay_s``; records concurrency and aborts."""

    def __init__(self, delay_s: float = 0.05) -> None:
        self.delay_s = delay_s
        self.in_flight = 0
        self.max_in_flight = 0
        self.aborted: list[str] = []
        self.prompts: list[Any] = []

    async def generate(self, prompt: Any, params: dict[str, Any], request_id: str):  # noqa: ANN201
        self.prompts.append(prompt)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.in_flight -= 1
        if isinstance(prompt, dict):  # scoring: prompt logprobs, -0.5 per token
            ids = prompt["prompt_token_ids"]
            plp = [None] + [{t: SimpleNamespace(logprob=-0.5)} for t in ids[1:]]
            yield SimpleNamespace(outputs=[], prompt_token_ids=ids, prompt_logprobs=plp)
            return
        text = f"ok:{prompt[-5:]}"
        outs = [
            SimpleNamespace(text=text, token_ids=[1, 2, 3], logprobs=None, finish_reason="stop")
            for _ in range(params["n"])
        ]
        yield SimpleNamespace(
            outputs=outs, prompt_token_ids=list(range(len(prompt))), num_cached_tokens=2
        )

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)


def _backend(engine: ScriptedAsyncEngine) -> VLLMBackend:
    return VLLMBackend(name="v", engine=engine, tokenizer=ScriptedTokenizer(), sampling_params=dict)


async def test_concurrent_requests_reach_the_engine_together():
    engine = ScriptedAsyncEngine(delay_s=0.2)
    backend = _backend(engine)
    reqs = [GenerationRequest(prompt=f"task {i}", n=2) for i in range(8)]
    t0 = asyncio.get_running_loop().time()
    results = await asyncio.gather(*(backend.generate(r) for r in reqs))
    elapsed = asyncio.get_running_loop().time() - t0
    assert engine.max_in_flight == 8  # no lock: the engine sees all 8 at once
    assert elapsed < 8 * 0.2 / 2
    assert results[3].texts == ["ok:ask 3", "ok:ask 3"]
    assert results[3].usage.prompt_tokens == 6 and results[3].usage.cached_prompt_tokens == 2
    assert results[3].usage.completion_tokens == 6


async def test_chat_template_and_cancel_aborts():
    engine = ScriptedAsyncEngine(delay_s=5)
    backend = _backend(engine)
    msgs = (ChatMessage(role="user", content="hi"),)
    task = asyncio.create_task(backend.generate(GenerationRequest(messages=msgs)))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert engine.prompts == ["<user>hi<assistant>"] and len(engine.aborted) == 1


async def test_score_continuations_concurrently():
    engine = ScriptedAsyncEngine(delay_s=0.1)
    scored = await _backend(engine).score_continuations("ab", ["c", "de"])
    assert scored.logprobs == (-0.5, -1.0) and scored.token_counts == (1, 2)
    assert engine.max_in_flight == 2
    assert scored.usage.cached_prompt_tokens == 2


@pytest.mark.skipif(vllm_available(), reason="vllm is installed: the gpu test covers it")
def test_real_engine_needs_the_gpu_extra():
    from nightowl.errors import MissingExtraError

    with pytest.raises(MissingExtraError, match="gpu"):
        VLLMBackend.from_model(name="v", model="/nonexistent")
