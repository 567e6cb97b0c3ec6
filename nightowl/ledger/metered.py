"""`MeteredModel`: a model backend whose every call lands in the ledger.

One metering path: a `MeteredModel` is bound to where its calls happen (`CallSite`:
run, episode, step, role, and optionally a `PendingWrites` buffer) and keeps the
standard `ModelBackend` signature, so callers only ever call ``generate(request)`` or
``score_continuations(prompt, continuations)``. The agent loop binds its models once per
step (``model.bind(site)``); a model built without a ledger records nothing, which is
how unmetered backends enter the same path (`as_metered`).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import time
from typing import Any

from nightowl import telemetry
from nightowl.config import Prices
from nightowl.errors import NightowlError
from nightowl.ledger._core import Ledger
from nightowl.ledger.pending import CallSite
from nightowl.llm.base import (
    GenerationRequest,
    GenerationResult,
    ModelBackend,
    ScoredContinuations,
    Usage,
)


def _error_text(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0]}"[:500] if msg else type(exc).__name__


class MeteredModel(ModelBackend):
    """Wraps a backend so that every call is recorded in the ledger.

    ``generate`` records one ``model_calls`` row per call (failed calls too, with
    ``meta["error"]``, ``ok`` false and zero tokens, then re-raises);
    ``score_continuations`` records a ``kind="score"`` row; ``count_tokens`` passes
    through unrecorded. Rows go to the bound site's `PendingWrites` when it has one (the
    agent loop flushes them with the step, in one transaction); otherwise they are
    written at once from a worker thread so the event loop is not blocked.

    Args:
        backend: the wrapped backend.
        ledger: the ledger, or None to record nothing (an unmetered model).
        prices: the model's prices (per 1M tokens).
        run_id: the run calls are recorded under.
        role: the role calls are recorded under ("student", "teacher", "critic", ...).
        episode_id: the episode (None: run-level calls).
        step: the step within the episode.
    """

    def __init__(
        self,
        backend: ModelBackend,
        ledger: Ledger | None,
        prices: Prices,
        *,
        run_id: str,
        role: str,
        episode_id: str | None = None,
        step: int | None = None,
    ) -> None:
        self.backend = backend
        self.ledger = ledger
        self.prices = prices
        self.site = CallSite(run_id=run_id, role=role, episode_id=episode_id, step=step)
        self.name = getattr(backend, "name", "model")

    @property
    def run_id(self) -> str:
        """The run calls are recorded under."""
        return self.site.run_id

    @property
    def role(self) -> str:
        """The role calls are recorded under."""
        return self.site.role

    def bind(self, site: CallSite | None = None, **fields: Any) -> MeteredModel:
        """The same backend and ledger, recording at ``site`` (fields override it).

        Empty fields of ``site`` keep this model's values, so a tier can bind its model
        to a step's site without knowing the run or its own role.
        """
        cur = self.site
        if site is not None:
            given = {
                k: getattr(site, k)
                for k in ("run_id", "role", "episode_id", "step", "pending")
                if getattr(site, k) not in (None, "")
            }
            cur = dataclasses.replace(cur, **given)
        if fields:
            cur = dataclasses.replace(cur, **fields)
        out = copy.copy(self)
        out.site = cur
        return out

    def with_role(self, role: str) -> MeteredModel:
        """The same backend and ledger, recording under another role."""
        return self.bind(role=role)

    async def _record(self, **kw: Any) -> None:
        await record_call(self.ledger, self.site, self.prices, provider=_provider(self.backend),
                          **kw)

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        """Generate with the wrapped backend and record the call."""
        meta: dict[str, Any] = {"n": request.n, "max_tokens": request.max_tokens}
        t0 = time.perf_counter()
        try:
            result = await self.backend.generate(request)
        except BaseException as exc:
            meta["error"] = _error_text(exc)
            await self._record_failure(kind="generate", meta=meta,
                                       latency_s=time.perf_counter() - t0)
            raise
        latency = time.perf_counter() - t0
        finish = [c.finish_reason for c in result.completions]
        if any(f != "stop" for f in finish):
            meta["finish_reasons"] = finish
        await self._record(
            model=result.model or self.name, usage=result.usage, latency_s=latency, meta=meta,
            kind="generate", operation="chat" if request.messages else "text_completion",
        )
        return result

    async def _record_failure(self, *, latency_s: float, **kw: Any) -> None:
        try:
            await self._record(model=self.name, usage=Usage(), latency_s=latency_s, ok=False, **kw)
        except asyncio.CancelledError:
            # Cancelled while recording: write synchronously so the call is not lost.
            write_call(self.ledger, self.site, self.prices, model=self.name, usage=Usage(),
                       latency_s=latency_s, ok=False, **kw)
        except NightowlError:
            pass  # never mask the original failure

    async def score_continuations(
        self, prompt: str, continuations: list[str]
    ) -> ScoredContinuations:
        """Score with the wrapped backend and record the call (``kind="score"``)."""
        meta: dict[str, Any] = {"continuations": len(continuations)}
        t0 = time.perf_counter()
        try:
            scored = await self.backend.score_continuations(prompt, continuations)
        except NotImplementedError:
            raise
        except BaseException as exc:
            meta["error"] = _error_text(exc)
            await self._record_failure(kind="score", meta=meta,
                                       latency_s=time.perf_counter() - t0)
            raise
        await self._record(
            model=self.name, usage=scored.usage, latency_s=time.perf_counter() - t0,
            meta=meta, kind="score",
        )
        return scored

    def count_tokens(self, text: str) -> int:
        """Pass through to the wrapped backend (not recorded)."""
        return self.backend.count_tokens(text)

    async def aclose(self) -> None:
        """Close the wrapped backend."""
        await self.backend.aclose()


async def record_call(
    ledger: Ledger | None,
    site: CallSite,
    prices: Prices,
    *,
    operation: str | None = None,
    provider: str | None = None,
    **kw: Any,
) -> float:
    """Record one model call made at ``site`` (the single write path of metering); its cost.

    Queued in ``site.pending`` when the site has a buffer, else written at once from a
    worker thread. ``kw`` are `Ledger.model_call_values`'s remaining arguments (model,
    usage, latency_s, meta, kind, ok). Nothing is written without a ledger (cost 0).
    The call is also one trace span (`nightowl.telemetry`; a no-op unless tracing is on),
    with ``operation`` (GenAI ``gen_ai.operation.name``) and ``provider``.
    """
    if ledger is None:
        cost = 0.0
    elif site.pending is not None:
        cost = site.pending.model_call(ledger, **_at(site, prices, kw))
    else:
        cost = await asyncio.to_thread(write_call, ledger, site, prices, **kw)
    usage = kw.get("usage") or Usage()
    meta = kw.get("meta") or {}
    kind = kw.get("kind", "generate")
    telemetry.model_call_span(
        model=str(kw.get("model") or "model"),
        operation=operation or ("text_completion" if kind == "generate" else kind),
        provider=provider or ("nightowl.oracle" if meta.get("oracle") else None),
        role=site.role, run_id=site.run_id, episode_id=site.episode_id, step=site.step,
        input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens,
        cost_usd=cost, latency_s=float(kw.get("latency_s") or 0.0),
        ok=bool(kw.get("ok", True)), error=meta.get("error"),
    )
    return cost


def _provider(backend: ModelBackend) -> str:
    """``gen_ai.provider.name`` of a backend: its ``provider`` attribute, else its module."""
    given = getattr(backend, "provider", None)
    if isinstance(given, str) and given:
        return given
    return "nightowl." + type(backend).__module__.rsplit(".", 1)[-1]


def write_call(ledger: Ledger | None, site: CallSite, prices: Prices, **kw: Any) -> float:
    """`record_call` written now, in this thread (``site.pending`` ignored); its cost."""
    return 0.0 if ledger is None else ledger.record_model_call(**_at(site, prices, kw))


def _at(site: CallSite, prices: Prices, kw: dict[str, Any]) -> dict[str, Any]:
    return {**kw, "run_id": site.run_id, "episode_id": site.episode_id, "step": site.step,
            "role": site.role, "prices": prices}


def as_metered(model: ModelBackend, *, role: str, prices: Prices | None = None) -> MeteredModel:
    """``model`` itself when it is metered, else wrapped with no ledger (records nothing).

    The one place that decides whether a model is metered: tiers take any backend and
    call this once, then always go through `MeteredModel.bind`.
    """
    if isinstance(model, MeteredModel):
        return model
    return MeteredModel(model, None, prices or Prices(), run_id="", role=role)
