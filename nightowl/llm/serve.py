"""An OpenAI-protocol HTTP server over any `ModelBackend` (FastAPI).

Exposes ``GET /v1/models``, ``POST /v1/completions`` and ``POST /v1/chat/completions``
with ``n``, ``seed``, ``stop``, logprobs, usage, the vLLM-style choice constraint
(``structured_outputs.choice`` or ``guided_choice``) and, for backends that can score
prompts, ``echo`` with prompt logprobs. ``nightowl models serve smollm2`` runs it on
the embedded model, so any OpenAI client (and nightowl's own `OpenAICompatBackend`)
can talk to it; the tests use it as a real server on 127.0.0.1.

Errors follow the OpenAI shape ``{"error": {"message", "type", "code"}}``: bad requests
and unsupported features are 400, backend failures 500.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from nightowl.errors import ModelError, UserError
from nightowl.llm.base import (
    ChatMessage,
    Completion,
    GenerationRequest,
    ModelBackend,
    Usage,
)

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


class ChatTurn(BaseModel):
    """One chat message (string content only)."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "developer"]
    content: str


class ChatBody(_Constrained):
    """``POST /v1/chat/completions``."""

    messages: list[ChatTurn] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)


def _usage(u: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_prompt_tokens},
    }


def _error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse(
        status_code=status, content={"error": {"message": message, "type": kind, "code": status}}
    )


# -- the app ------------------------------------------------------------------------


def create_app(backend: ModelBackend, *, served_name: str | None = None) -> FastAPI:
    """A FastAPI app serving ``backend`` under the model id ``served_name``."""
    name = served_name or backend.name
    app = FastAPI(title=f"nightowl: {name}", version="1")
    app.state.backend = backend

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error(
            400, f"invalid request at {where}: {first.get('msg')}", "invalid_request_error"
        )

    @app.exception_handler(ValueError)
    async def _bad_value(_: Request, exc: ValueError) -> JSONResponse:
        return _error(400, str(exc), "invalid_request_error")

    @app.exception_handler(UserError)
    async def _user(_: Request, exc: UserError) -> JSONResponse:
        return _error(400, str(exc), "invalid_request_error")

    @app.exception_handler(NotImplementedError)
    async def _unsupported(_: Request, exc: NotImplementedError) -> JSONResponse:
        return _error(400, str(exc) or "not supported by this backend", "invalid_request_error")

    @app.exception_handler(ModelError)
    async def _model(_: Request, exc: ModelError) -> JSONResponse:
        unsupported = "does not support" in str(exc)
        status = 400 if unsupported else (exc.status or 500)
        kind = "invalid_request_error" if status < 500 else "server_error"
        return _error(status, str(exc), kind)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": name, "object": "model", "created": 0, "owned_by": "nightowl"}],
        }

    def _check_model(requested: str | None) -> None:
        if requested is not None and requested != name:
            raise UserError(f"model {requested!r} is not served here; this server has {name!r}")

    @app.post("/v1/chat/completions")
    async def chat(body: ChatBody) -> dict[str, Any]:
        _check_model(body.model)
        request = GenerationRequest(
            messages=tuple(
                ChatMessage(role="system" if t.role == "developer" else t.role, content=t.content)
                for t in body.messages
            ),
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
        result = await backend.generate(request)
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
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": name,
            "choices": choices,
            "usage": _usage(result.usage),
        }

    @app.post("/v1/completions")
    async def completions(body: CompletionBody) -> dict[str, Any]:
        _check_model(body.model)
        prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
        if not prompts:
            raise ValueError("prompt must not be empty")
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
    backend: ModelBackend, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info"
) -> None:
    """Serve ``backend`` until interrupted (blocking)."""
    import uvicorn

    uvicorn.run(create_app(backend), host=host, port=port, log_level=log_level)
