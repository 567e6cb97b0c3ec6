"""An OpenAI-protocol HTTP server over any `ModelBackend` (FastAPI).

Exposes ``GET /v1/models``, ``POST /v1/completions`` and ``POST /v1/chat/completions``
with ``n``, ``seed``, ``stop``, logprobs, usage, the vLLM-style choice constraint
(``structured_outputs.choice`` or ``guided_choice``) and, for backends that can score
prompts, ``echo`` with prompt logprobs. ``nightowl models serve smollm2`` runs it on
the embedded model, so any OpenAI client (and nightowl's own `OpenAICompatBackend`)
can talk to it; the tests use it as a real server on 127.0.0.1.

Chat requests may set ``stream=true``: the reply comes back as server-sent events in
the ``chat.completion.chunk`` format, ending with ``data: [DONE]`` (and a usage chunk
before it when ``stream_options.include_usage``). Backends without token streaming
generate the whole reply first and send it as one content chunk per choice, so clients
see the same protocol either way. Message content may be a string or a list of text
parts; image/audio parts and ``tools`` are refused with 400 (this server has no
vision or tool-calling path; silently dropping them would give wrong answers).

Errors follow the OpenAI shape ``{"error": {"message", "type", "code"}}``: bad requests,
unsupported features and prompts longer than the model's context are 400, backend
failures 500. Requests are not serialised here: each backend decides how much runs at
once (the embedded model holds its own lock; HTTP backends run concurrently).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import Depends, FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from nightowl.errors import UserError
from nightowl.llm.base import (
    ChatMessage,
    Completion,
    GenerationRequest,
    GenerationResult,
    ModelBackend,
    Usage,
)
from nightowl.llm.serve_guard import Authenticator, install_guards
from nightowl.llm.serve_limits import ServeLimits, bounded


class PromptTooLongError(UserError):
    """The prompt does not fit in the model's context (a 400, never a retryable 5xx)."""

# -- wire formats -------------------------------------------------------------------


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

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

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


def _usage(u: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_prompt_tokens},
    }


def check_prompt_fits(backend: ModelBackend, request: GenerationRequest) -> int | None:
    """Raise `PromptTooLongError` when the rendered prompt exceeds the model's context.

    Works for backends that expose ``render``, ``count_tokens`` and ``context_length``
    (the in-process ones); others are left to their server, whose 4xx passes through.
    Returns the prompt's token count when it could be measured.
    """
    render = getattr(backend, "render", None)
    limit = getattr(backend, "context_length", None)
    if render is None or not isinstance(limit, int) or limit <= 0:
        return None
    tokens = backend.count_tokens(render(request))
    if tokens >= limit:
        raise PromptTooLongError(
            f"prompt has {tokens} tokens but {backend.name} has a {limit}-token context; "
            "shorten the messages"
        )
    return tokens


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
        events.append(chunk([], usage=_usage(result.usage), **(extra or {})))
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


# -- the app ------------------------------------------------------------------------


def create_app(
    backend: ModelBackend,
    *,
    served_name: str | None = None,
    limits: ServeLimits | None = None,
    authenticate: Authenticator | None = None,
) -> FastAPI:
    """A FastAPI app serving ``backend`` under the model id ``served_name``.

    ``limits`` bound every request (default: `ServeLimits` from the environment);
    ``authenticate`` (token -> (key id, tenant) or None) makes bearer keys required.
    """
    name = served_name or backend.name
    limits = limits or ServeLimits()
    app = FastAPI(title=f"nightowl: {name}", version="1")
    app.state.backend = backend
    guard = install_guards(app, limits, authenticate)
    chat_body = bounded(ChatBody, limits)
    completion_body = bounded(CompletionBody, limits)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "in_flight": app.state.admission.in_flight}

    @app.get("/v1/models", dependencies=[Depends(guard)])
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": name, "object": "model", "created": 0, "owned_by": "nightowl"}],
        }

    def _check_model(requested: str | None) -> None:
        if requested is not None and requested != name:
            raise UserError(f"model {requested!r} is not served here; this server has {name!r}")

    async def chat(body: ChatBody) -> dict[str, Any] | StreamingResponse:
        _check_model(body.model)
        body.refuse_unsupported(name)
        request = GenerationRequest(
            messages=body.chat_messages(),
            n=body.n,
            max_tokens=body.max_completion_tokens or body.max_tokens or 256,
            temperature=body.temperature,
            top_p=body.top_p,
            stop=body.stops(),
            seed=body.seed,
            logprobs=body.logprobs,
            top_logprobs=body.top_logprobs or 0,
            choices=body.choices(),
            json_schema=body.schema_constraint(),
        )
        await asyncio.to_thread(check_prompt_fits, backend, request)
        result = await backend.generate(request)
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        if body.stream:
            include = bool(body.stream_options and body.stream_options.include_usage)
            return sse_response(
                chunk_events(result, completion_id=completion_id, model=name,
                             include_usage=include)
            )
        choices = []
        for i, c in enumerate(result.completions):
            choices.append(
                {
                    "index": i,
                    "message": {"role": "assistant", "content": c.text},
                    "logprobs": _chat_logprobs(c) if body.logprobs else None,
                    "finish_reason": c.finish_reason,
                }
            )
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": name,
            "choices": choices,
            "usage": _usage(result.usage),
        }

    async def completions(body: CompletionBody) -> dict[str, Any]:
        _check_model(body.model)
        prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
        if not prompts:
            raise UserError("prompt must not be empty")
        choices: list[dict[str, Any]] = []
        usage = Usage()
        for prompt in prompts:
            request = GenerationRequest(
                prompt=prompt,
                n=body.n,
                max_tokens=body.max_tokens or 16,
                temperature=body.temperature,
                top_p=body.top_p,
                stop=body.stops(),
                seed=body.seed,
                logprobs=body.logprobs is not None,
                top_logprobs=body.logprobs or 0,
                choices=body.choices(),
                json_schema=body.schema_constraint(),
            )
            await asyncio.to_thread(check_prompt_fits, backend, request)
            result = await backend.generate(request)
            usage = usage + result.usage
            echoed = await _echo(backend, prompt, body) if body.echo else None
            for c in result.completions:
                choices.append(_completion_choice(len(choices), prompt, c, body, echoed))
        return {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": name,
            "choices": choices,
            "usage": _usage(usage),
        }

    # The routes take the bounded body models (their schema shows the limits).
    chat.__annotations__["body"] = chat_body
    completions.__annotations__["body"] = completion_body
    app.post("/v1/chat/completions", response_model=None, dependencies=[Depends(guard)])(chat)
    app.post("/v1/completions", dependencies=[Depends(guard)])(completions)
    return app


def _chat_logprobs(c: Completion) -> dict[str, Any]:
    return {
        "content": [
            {
                "token": t.token,
                "logprob": t.logprob,
                "bytes": list(t.token.encode()),
                "top_logprobs": [
                    {"token": tok, "logprob": lp, "bytes": list(tok.encode())} for tok, lp in t.top
                ],
            }
            for t in c.logprobs or ()
        ]
    }


async def _echo(
    backend: ModelBackend, prompt: str, body: CompletionBody
) -> list[tuple[str, float | None, int]] | None:
    """Prompt tokens with their log-probabilities and text offsets (needs the backend)."""
    scorer = getattr(backend, "prompt_logprobs", None)
    if scorer is None:
        if body.logprobs is not None:
            raise NotImplementedError(f"{backend.name} cannot return prompt logprobs (echo)")
        return None
    if body.logprobs is None:
        return None
    result: list[tuple[str, float | None, int]] = await scorer(prompt)
    return result


def _completion_choice(
    index: int,
    prompt: str,
    c: Completion,
    body: CompletionBody,
    echoed: list[tuple[str, float | None, int]] | None,
) -> dict[str, Any]:
    text = (prompt + c.text) if body.echo else c.text
    logprobs = None
    if body.logprobs is not None:
        tokens: list[str] = []
        values: list[float | None] = []
        tops: list[dict[str, float] | None] = []
        offsets: list[int] = []
        if echoed is not None:
            for tok, lp, off in echoed:
                tokens.append(tok)
                values.append(lp)
                tops.append(None)
                offsets.append(off)
        offset = len(prompt) if body.echo else 0
        for t in c.logprobs or ():
            tokens.append(t.token)
            values.append(t.logprob)
            tops.append(dict(t.top) if t.top else ({t.token: t.logprob} if body.logprobs else None))
            offsets.append(offset)
            offset += len(t.token)
        logprobs = {
            "tokens": tokens,
            "token_logprobs": values,
            "top_logprobs": tops,
            "text_offset": offsets,
        }
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": c.finish_reason}


def run_server(
    backend: ModelBackend,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    limits: ServeLimits | None = None,
    authenticate: Authenticator | None = None,
) -> None:
    """Serve ``backend`` until interrupted (blocking)."""
    import uvicorn

    app = create_app(backend, limits=limits, authenticate=authenticate)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
