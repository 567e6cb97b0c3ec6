"""`nightowl models serve smollm2` (a real process) with the official clients.

Covers the protocol fixes: SSE streaming with a usage chunk, content parts, clear 400s
for images, tools and over-long prompts, and concurrent requests all answered.
"""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from tests.server.conftest import ServerProcess

MSG = [{"role": "user", "content": "Say hello."}]


def test_sync_client_and_content_parts(models_server: ServerProcess) -> None:
    client = openai.OpenAI(base_url=models_server.url, api_key="x", max_retries=0)
    reply = client.chat.completions.create(
        model="smollm2", messages=MSG, max_tokens=8, temperature=0
    )
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    parts = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": [{"type": "text", "text": "Say hello."}]}],
        max_tokens=8,
        temperature=0,
    )
    # The same text given as one part renders the same prompt: same greedy answer.
    assert parts.choices[0].message.content == reply.choices[0].message.content
    assert parts.usage is not None and parts.usage.prompt_tokens == reply.usage.prompt_tokens


def test_streaming_chunks_usage_and_done(models_server: ServerProcess) -> None:
    client = openai.OpenAI(base_url=models_server.url, api_key="x", max_retries=0)
    full = client.chat.completions.create(
        model="smollm2", messages=MSG, max_tokens=8, temperature=0
    )
    chunks = list(
        client.chat.completions.create(
            model="smollm2", messages=MSG, max_tokens=8, temperature=0, stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert len(chunks) >= 3
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] in ("stop", "length")
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens  # type: ignore[union-attr]
    # Raw wire: the stream ends with data: [DONE].
    with httpx.stream(
        "POST", f"{models_server.url}/chat/completions",
        json={"messages": MSG, "max_tokens": 4, "stream": True}, timeout=120,
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [ln for ln in r.iter_lines() if ln]
    assert lines[-1] == "data: [DONE]"


async def test_async_client_concurrent(models_server: ServerProcess) -> None:
    client = openai.AsyncOpenAI(base_url=models_server.url, api_key="x", max_retries=0)
    replies = await asyncio.gather(
        *[
            client.chat.completions.create(
                model="smollm2", messages=[{"role": "user", "content": f"Count to {i}."}],
                max_tokens=4, temperature=0,
            )
            for i in range(3)
        ]
    )
    assert all(r.choices[0].message.content is not None for r in replies)
    stream = await client.chat.completions.create(
        model="smollm2", messages=MSG, max_tokens=4, stream=True
    )
    got = [c async for c in stream]
    assert any(c.choices and c.choices[0].finish_reason for c in got)
    await client.close()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
        (
            {"messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]}]},
            "image_url",
        ),
        ({"messages": [{"role": "user", "content": "x " * 9500}]}, "context"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "role"),
        ({"model": "gpt-9"}, "not served"),
    ],
)
def test_refusals_are_clear_400s(models_server: ServerProcess, extra: dict, needle: str) -> None:
    body = {"model": "smollm2", "messages": MSG, "max_tokens": 4, **extra}
    r = httpx.post(f"{models_server.url}/chat/completions", json=body, timeout=120)
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert needle in message and "\n" not in message
    assert httpx.get(f"{models_server.url}/models", timeout=10).status_code == 200


def test_openai_client_raises_bad_request_for_tools(models_server: ServerProcess) -> None:
    client = openai.OpenAI(base_url=models_server.url, api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="tools"):
        client.chat.completions.create(
            model="smollm2", messages=MSG, max_tokens=4,
            tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
        )


def test_langchain_chat_openai_invoke_and_stream(models_server: ServerProcess) -> None:
    lc = pytest.importorskip("langchain_openai")
    llm = lc.ChatOpenAI(
        base_url=models_server.url, api_key="x", model="smollm2", max_tokens=8,
        temperature=0, max_retries=0,
    )
    answer = llm.invoke("Say hello.")
    assert isinstance(answer.content, str) and answer.content
    pieces = list(llm.stream("Say hello."))
    assert "".join(str(p.content) for p in pieces) == answer.content


def test_requests_are_not_serialised_by_the_server(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A backend that can run concurrently (scripted fake, 1 s per call) is not queued."""
    import os
    import time

    from tests.server.conftest import start_server

    env = {**os.environ, "NIGHTOWL_HOME": str(tmp_path),
           "NIGHTOWL_MODELS__SLOW__BACKEND": "scripted",
           "NIGHTOWL_MODELS__SLOW__PARAMS__DEFAULT": "done",
           "NIGHTOWL_MODELS__SLOW__PARAMS__DELAY_S": "1.0"}
    server = start_server(["models", "serve", "slow"], tmp_path / "log", env=env)
    try:
        client = openai.AsyncOpenAI(base_url=server.url, api_key="x", max_retries=0)

        async def go() -> float:
            t0 = time.perf_counter()
            await asyncio.gather(*[
                client.chat.completions.create(model="slow", messages=MSG) for _ in range(4)
            ])
            await client.close()
            return time.perf_counter() - t0

        assert asyncio.run(go()) < 3.0  # serialised would take >= 4 s
    finally:
        server.stop()
