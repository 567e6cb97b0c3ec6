"""The OpenAI chat-completions wire types both nightowl servers speak.

Request bodies (`ChatBody`, `CompletionBody`, their `ChatTurn` messages and
`StreamOptions`), the generic response models (`UsageOut`, `ChoiceOut`, `ModelList`,
...) and the pure helpers that render usage and ``chat.completion.chunk`` server-sent
events. `nightowl.llm.serve` (``nightowl models serve``) and `nightowl.server`
(``nightowl serve``) import them from here; the client side's mapping is in
`nightowl.llm._openai_protocol`.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from nightowl.errors import UserError
from nightowl.llm.base import ChatMessage, GenerationRequest, GenerationResult, Usage


def stop_strings(stop: str | list[str] | None) -> tuple[str, ...]:
    """A body's ``stop`` as a tuple (at most 4, as in OpenAI's API: `bounded` checks that)."""
    if stop is None:
        return ()
    return (stop,) if isinstance(stop, str) else tuple(stop)


class _Constrained(BaseModel):
    """Fields shared by both endpoints (unknown fields are accepted and ignored)."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    n: int = Field(1, ge=1, le=64)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    structured_outputs: dict[str, Any] | None = None
    guided_choice: list[str] | None = None
    guided_json: dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None

    def choices(self) -> tuple[str, ...] | None:
        so = self.structured_outputs or {}
        raw = so.get("choice") or self.guided_choice
        return tuple(str(c) for c in raw) if raw else None

    def schema_constraint(self) -> dict[str, Any] | None:
        so = self.structured_outputs or {}
        if so.get("json") is not None:
            return dict(so["json"])
        if self.guided_json is not None:
            return self.guided_json
        rf = self.response_format or {}
        if rf.get("type") == "json_schema":
            return dict((rf.get("json_schema") or {}).get("schema") or {})
        if rf.get("type") == "json_object":
            return {"type": "object"}
        return None

    def generation_request(self, **fields: Any) -> GenerationRequest:
        """A `GenerationRequest` with this body's sampling settings, stops and constraint."""
        return GenerationRequest(
            n=self.n,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=stop_strings(self.stop),
            seed=self.seed,
            choices=self.choices(),
            json_schema=self.schema_constraint(),
            **fields,
        )


class CompletionBody(_Constrained):
    """``POST /v1/completions``."""

    prompt: str | list[str]
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False

    def prompt_chars(self) -> int:
        """Characters of all prompts together (for the prompt-size bound)."""
        return len(self.prompt) if isinstance(self.prompt, str) else sum(map(len, self.prompt))


class ContentPart(BaseModel):
    """One part of a message's content list; only ``text`` parts can be served."""

    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatTurn(BaseModel):
    """One chat message: content as a string or a list of text parts."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        """The message text; non-text parts raise `UserError` (refused, not dropped)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        texts: list[str] = []
        for part in self.content:
            if part.type != "text" or part.text is None:
                raise UserError(
                    f"content part of type {part.type!r} is not supported: this server is "
                    "text-only (send text parts or a string)"
                )
            texts.append(part.text)
        return "\n".join(texts)

    def chars(self) -> int:
        """Characters of text in this message (for the prompt-size bound)."""
        if self.content is None:
            return 0
        if isinstance(self.content, str):
            return len(self.content)
        return sum(len(p.text or "") for p in self.content)

    def chat_message(self) -> ChatMessage:
        """As a backend `ChatMessage` (``developer`` is treated as ``system``)."""
        role = "system" if self.role == "developer" else self.role
        return ChatMessage(role=role, content=self.text())


class StreamOptions(BaseModel):
    """``stream_options`` of a streaming chat request."""

    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatBody(_Constrained):
    """``POST /v1/chat/completions``."""

    messages: list[ChatTurn] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    functions: list[dict[str, Any]] | None = None

    def refuse_unsupported(self, served: str) -> None:
        """Fields this server cannot honour raise `UserError` (400) instead of being ignored."""
        if self.tools or self.functions:
            raise UserError(
                f"tools/function calling is not supported by {served}; "
                "remove `tools` or use a server whose model supports tool calls"
            )
        if self.tool_choice not in (None, "none"):
            raise UserError(f"tool_choice is not supported by {served} (no tools)")
        if self.stream_options is not None and not self.stream:
            raise UserError("stream_options is only allowed with stream=true")

    def chat_messages(self) -> tuple[ChatMessage, ...]:
        """The messages as backend `ChatMessage`s."""
        return tuple(t.chat_message() for t in self.messages)

    def prompt_chars(self) -> int:
        """Characters of all messages together (for the prompt-size bound)."""
        return sum(t.chars() for t in self.messages)


class UsageOut(BaseModel):
    """OpenAI usage block."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: dict[str, int] = Field(default_factory=dict)


class MessageOut(BaseModel):
    """An assistant message."""

    role: Literal["assistant"] = "assistant"
    content: str


class ChoiceOut(BaseModel):
    """One choice."""

    index: int
    message: MessageOut
    finish_reason: str
    logprobs: None = None


class ModelCard(BaseModel):
    """An entry of ``/v1/models``."""

    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "nightowl"


class ModelList(BaseModel):
    """``GET /v1/models``."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


def usage_json(u: Usage) -> dict[str, Any]:
    """The OpenAI ``usage`` object of ``u`` (cached prompt tokens in the details)."""
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_prompt_tokens},
    }


def sse(payload: dict[str, Any] | str) -> str:
    """One server-sent event line pair (``data: ...``)."""
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n"


def chunk_events(
    result: GenerationResult,
    *,
    completion_id: str,
    model: str,
    include_usage: bool,
    extra: dict[str, Any] | None = None,
) -> list[str]:
    """A finished result as ``chat.completion.chunk`` SSE events, ``[DONE]`` last.

    Per choice: a role chunk, one content chunk, a finish chunk (OpenAI's order); then,
    with ``include_usage``, a chunk with empty ``choices`` and the usage. ``extra`` is
    merged into the final chunk (the nightowl extension of `nightowl serve`).
    """
    created = int(time.time())

    def chunk(choices: list[dict[str, Any]], **more: Any) -> str:
        body: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
        }
        if include_usage:
            body["usage"] = None
        body.update(more)
        return sse(body)

    events: list[str] = []
    for i, c in enumerate(result.completions):
        events.append(chunk([{"index": i, "delta": {"role": "assistant", "content": ""},
                              "finish_reason": None}]))
        events.append(chunk([{"index": i, "delta": {"content": c.text}, "finish_reason": None}]))
        events.append(chunk([{"index": i, "delta": {}, "finish_reason": c.finish_reason}]))
    if include_usage:
        events.append(chunk([], usage=usage_json(result.usage), **(extra or {})))
    elif extra:
        events.append(chunk([], **extra))
    events.append(sse("[DONE]"))
    return events


async def stream_events(events: list[str]) -> AsyncIterator[str]:
    """Yield prepared SSE events (a generator for `StreamingResponse`)."""
    for event in events:
        yield event


def sse_response(events: list[str]) -> StreamingResponse:
    """A ``text/event-stream`` response over prepared events."""
    return StreamingResponse(
        stream_events(events),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
