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
import time
import uuid
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.responses import StreamingResponse

from nightowl.errors import UserError
from nightowl.llm.base import Completion, GenerationRequest, ModelBackend, PromptTooLongError, Usage
from nightowl.llm.openai_wire import (
    ChatBody,
    CompletionBody,
    ModelCard,
    ModelList,
    chunk_events,
    sse_response,
    usage_json,
)
from nightowl.llm.serve_guard import Authenticator, install_guards
from nightowl.llm.serve_limits import ServeLimits, bounded


def check_prompt_fits(backend: ModelBackend, request: GenerationRequest) -> None:
    """Raise `PromptTooLongError` when the rendered prompt exceeds the model's context.

    Works for backends that expose ``render``, ``count_tokens`` and ``context_length``
    (the in-process ones); others are left to their server, whose 4xx passes through.
    """
    render = getattr(backend, "render", None)
    limit = getattr(backend, "context_length", None)
    if render is None or not isinstance(limit, int) or limit <= 0:
        return
    tokens = backend.count_tokens(render(request))
    if tokens >= limit:
        raise PromptTooLongError(
            f"prompt has {tokens} tokens but {backend.name} has a {limit}-token context; "
            "shorten the messages"
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
        return ModelList(data=[ModelCard(id=name)]).model_dump()

    def _check_model(requested: str | None) -> None:
        if requested is not None and requested != name:
            raise UserError(f"model {requested!r} is not served here; this server has {name!r}")

    async def chat(body: ChatBody) -> dict[str, Any] | StreamingResponse:
        _check_model(body.model)
        body.refuse_unsupported(name)
        request = body.generation_request(
            messages=body.chat_messages(),
            max_tokens=body.max_completion_tokens or body.max_tokens or 256,
            logprobs=body.logprobs,
            top_logprobs=body.top_logprobs or 0,
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
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": c.text},
                "logprobs": _chat_logprobs(c) if body.logprobs else None,
                "finish_reason": c.finish_reason,
            }
            for i, c in enumerate(result.completions)
        ]
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": name,
            "choices": choices,
            "usage": usage_json(result.usage),
        }

    async def completions(body: CompletionBody) -> dict[str, Any]:
        _check_model(body.model)
        prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
        choices: list[dict[str, Any]] = []
        usage = Usage()
        for prompt in prompts:
            request = body.generation_request(
                prompt=prompt,
                max_tokens=body.max_tokens or 16,
                logprobs=body.logprobs is not None,
                top_logprobs=body.logprobs or 0,
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
            "usage": usage_json(usage),
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
    if body.logprobs is None:
        return None
    scorer = getattr(backend, "prompt_logprobs", None)
    if scorer is None:
        raise NotImplementedError(f"{backend.name} cannot return prompt logprobs (echo)")
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
        # one row per token (the echoed prompt's, then the completion's), sent as columns
        rows: list[tuple[str, float | None, dict[str, float] | None, int]] = [
            (tok, lp, None, off) for tok, lp, off in echoed or ()
        ]
        offset = len(prompt) if body.echo else 0
        for t in c.logprobs or ():
            top = dict(t.top) if t.top else ({t.token: t.logprob} if body.logprobs else None)
            rows.append((t.token, t.logprob, top, offset))
            offset += len(t.token)
        columns = ("tokens", "token_logprobs", "top_logprobs", "text_offset")
        logprobs = {name: [row[i] for row in rows] for i, name in enumerate(columns)}
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": c.finish_reason}

