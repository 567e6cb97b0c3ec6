"""`ChatService`: the logic behind `nightowl serve`'s routes.

It authenticates bearer keys (sha256 lookup in SQL, in a worker thread) after a
per-key rate check on the token's hash, admits requests under per-key, per-tenant and
server-wide concurrency limits and a per-tenant rate (over any: `OverloadedError`, a
429 with Retry-After), maps model names to cascade modes, runs the `Assistant` and
renders OpenAI responses (JSON or SSE chunks) with the nightowl extension. The request
bounds (``n``, ``max_tokens``, messages, prompt size) are in the body model that
`request_model` builds from `ServeLimits`. Routes in `nightowl.server.app` only parse
and call it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from nightowl.chat import ApiKey, Assistant, ChatReply
from nightowl.chat.cascade import Mode
from nightowl.errors import NightowlError, UnknownNameError, UserError
from nightowl.llm.base import Completion, FinishReason, GenerationResult, Usage
from nightowl.llm.openai_wire import (
    ChoiceOut,
    MessageOut,
    ModelCard,
    ModelList,
    UsageOut,
    chunk_events,
    stop_strings,
    usage_json,
)
from nightowl.llm.serve_guard import AuthError, TooLargeError, bearer, token_digest
from nightowl.llm.serve_limits import Admission, OverloadedError, ServeLimits, bounded
from nightowl.server._protocol import (
    CASCADE_MODEL,
    AgreementOut,
    ChatCompletionRequest,
    ChatCompletionResponse,
    NightowlExtension,
)
from nightowl.server.metrics import Metrics


class ServerConfig(BaseModel):
    """Limits and access rules of the server."""

    require_key: bool = True
    tenant: str = Field("default", description="tenant when keys are not required")
    limits: ServeLimits = Field(default_factory=ServeLimits)


__all__ = ["AuthError", "ChatService", "OverloadedError", "ServerConfig", "TooLargeError"]


class ModelNotFoundError(UnknownNameError):
    """A model name this server does not serve (404)."""


class ClientGoneError(NightowlError):
    """The client disconnected; its generation was cancelled."""


@dataclass(frozen=True, kw_only=True)
class Answer:
    """A finished request: the JSON body, or SSE events when streaming.

    ``tiers``: the tier that gave each reply (for the access log).
    """

    json: dict[str, Any] | None = None
    events: list[str] | None = None
    tiers: tuple[str, ...] = ()


class ChatService:
    """Serves an `Assistant` over the OpenAI chat-completions protocol."""

    def __init__(self, assistant: Assistant, config: ServerConfig, *, has_teacher: bool) -> None:
        self.assistant = assistant
        self.config = config
        self.metrics = Metrics()
        self.admission = Admission(config.limits)
        self.request_model = bounded(ChatCompletionRequest, config.limits)
        self.models: dict[str, Mode] = {CASCADE_MODEL: "cascade", "nightowl-student": "student"}
        if has_teacher:
            self.models["nightowl-teacher"] = "teacher"

    # --- access --------------------------------------------------------------------------
    async def authenticate(
        self, authorization: str | None, *, client: str = "unknown", rate: bool = True
    ) -> ApiKey | None:
        """The key of a ``Bearer`` header (None when keys are not required).

        With ``rate``, one request is counted against the key's rate before the SQL
        lookup (by the token's hash; by the client address when keys are off) and
        against its tenant's rate after it.
        """
        if not self.config.require_key:
            if rate:
                self.admission.check_rate(f"client:{client}")
                self.admission.check_tenant_rate(self.config.tenant)
            return None
        token = bearer(authorization)
        if rate:
            self.admission.check_rate(token_digest(token))
        key = await asyncio.to_thread(self.assistant.keys.authenticate, token)
        if key is None:
            raise AuthError("invalid or revoked API key")
        if rate:
            self.admission.check_tenant_rate(key.tenant)
        return key

    @asynccontextmanager
    async def admitted(self, key: ApiKey | None, client: str = "unknown"):  # type: ignore[no-untyped-def]
        """Hold a per-key, per-tenant and server slot, or raise `OverloadedError` at once."""
        who = key.id if key is not None else f"client:{client}"
        tenant = key.tenant if key is not None else self.config.tenant
        with self.admission.slot(who, tenant):
            self.metrics.set_in_flight(self.admission.in_flight)
            try:
                yield
            finally:
                self.metrics.set_in_flight(self.admission.in_flight - 1)

    def model_list(self) -> ModelList:
        """The cascade and its tiers as model names."""
        return ModelList(data=[ModelCard(id=m) for m in self.models])

    # --- one request ----------------------------------------------------------------------
    async def complete(
        self,
        body: ChatCompletionRequest,
        *,
        key: ApiKey | None,
        thread_header: str | None,
        disconnected: Callable[[], Awaitable[bool]] | None = None,
    ) -> Answer:
        """Run a chat completion; errors are `NightowlError`s the app maps to statuses."""
        mode = self.models.get(body.model)
        if mode is None:
            raise ModelNotFoundError("model", body.model, sorted(self.models))
        body.refuse_unsupported()
        messages = [t.chat_message() for t in body.messages]  # images refused
        thread = body.thread_id(thread_header)
        if thread is not None and body.n > 1:
            raise UserError("n > 1 cannot be combined with a thread (a thread has one history)")
        kw: dict[str, Any] = {
            "thread": thread,
            "tenant": self.config.tenant,
            "key": key,
            "mode": mode,
            "max_tokens": body.max_completion_tokens or body.max_tokens,
            "temperature": body.temperature,
            "stop": stop_strings(body.stop),
            "seed": body.seed,
        }
        started = time.perf_counter()
        replies = await _cancellable(
            asyncio.gather(*[self.assistant.chat(messages, **kw) for _ in range(body.n)]),
            disconnected,
        )
        for r in replies:
            self.metrics.reply(r.tier, r.cost_usd)
        return self._render(body, replies, time.perf_counter() - started)

    def _render(
        self, body: ChatCompletionRequest, replies: list[ChatReply], latency_s: float
    ) -> Answer:
        cid = f"chatcmpl-{uuid.uuid4().hex}"
        tiers = tuple(r.tier for r in replies)
        exts = [_extension(r) for r in replies]
        ext: Any = exts[0] if len(exts) == 1 else exts
        usage = sum((r.usage for r in replies), Usage())
        if body.stream:
            result = GenerationResult(
                completions=tuple(
                    Completion(text=r.text, finish_reason=_finish(r)) for r in replies
                ),
                usage=usage,
                model=body.model,
                latency_s=latency_s,
            )
            include = bool(body.stream_options and body.stream_options.include_usage)
            ext_json = [e.model_dump() for e in exts] if isinstance(ext, list) else ext.model_dump()
            return Answer(
                events=chunk_events(
                    result,
                    completion_id=cid,
                    model=body.model,
                    include_usage=include,
                    extra={"nightowl": ext_json},
                ),
                tiers=tiers,
            )
        resp = ChatCompletionResponse(
            id=cid,
            created=int(time.time()),
            model=body.model,
            choices=[
                ChoiceOut(index=i, message=MessageOut(content=r.text), finish_reason=_finish(r))
                for i, r in enumerate(replies)
            ],
            usage=UsageOut(**usage_json(usage)),
            nightowl=ext,
        )
        return Answer(json=resp.model_dump(), tiers=tiers)


def _finish(r: ChatReply) -> FinishReason:
    return "length" if r.finish_reason == "length" else "stop"


def _extension(r: ChatReply) -> NightowlExtension:
    agreement = None
    if r.agreement is not None:
        agreement = AgreementOut(method=r.agreement.method, share=round(r.agreement.share, 4))
    return NightowlExtension(
        tier=r.tier,
        cost_usd=r.cost_usd,
        agreement=agreement,
        thread=r.thread,
        revision=r.revision,
        demos_used=r.demos_used,
        learned_revision=r.learned_revision,
    )


async def _cancellable(
    pending: Awaitable[list[ChatReply]], disconnected: Callable[[], Awaitable[bool]] | None
) -> list[ChatReply]:
    """Await ``pending``, cancelling it when the client goes away (polled twice a second)."""
    task = asyncio.ensure_future(pending)
    if disconnected is None:
        return await task
    while True:
        done, _ = await asyncio.wait({task}, timeout=0.5)
        if done:
            return task.result()
        if await disconnected():
            task.cancel()
            raise ClientGoneError("client disconnected; generation cancelled")
