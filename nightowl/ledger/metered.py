"""`MeteredModel`: a model backend whose every call lands in the ledger."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from nightowl.config import Prices
from nightowl.errors import NightowlError
from nightowl.ledger.core import Ledger
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
    through unrecorded. The write happens in a worker thread so the event loop is not
    blocked by a busy database.
    """

    def __init__(
        self,
        backend: ModelBackend,
        ledger: Ledger,
        prices: Prices,
        *,
        run_id: str,
        role: str,
        episode_id: str | None = None,
    ) -> None:
        self.backend = backend
        self.ledger = ledger
        self.prices = prices
        self.run_id = run_id
        self.role = role
        self.episode_id = episode_id
        self.name = getattr(backend, "name", "model")

    def with_role(self, role: str) -> MeteredModel:
        """The same backend and ledger, recording under another role."""
        return MeteredModel(
            self.backend,
            self.ledger,
            self.prices,
            run_id=self.run_id,
            role=role,
            episode_id=self.episode_id,
        )

    async def _record(self, **kw: Any) -> float:
        kw.setdefault("run_id", self.run_id)
        kw.setdefault("prices", self.prices)
        return await asyncio.to_thread(lambda: self.ledger.record_model_call(**kw))

    async def generate(  # type: ignore[override]
        self,
        request: GenerationRequest,
        *,
        episode_id: str | None = None,
        step: int | None = None,
        role: str | None = None,
    ) -> GenerationResult:
        """Generate with the wrapped backend and record the call."""
        eid = episode_id if episode_id is not None else self.episode_id
        meta: dict[str, Any] = {"n": request.n, "max_tokens": request.max_tokens}
        t0 = time.perf_counter()
        try:
            result = await self.backend.generate(request)
        except BaseException as exc:
            meta["error"] = _error_text(exc)
            await self._record_failure(
                episode_id=eid, step=step, role=role or self.role, kind="generate", meta=meta,
                latency_s=time.perf_counter() - t0,
            )
            raise
        latency = time.perf_counter() - t0
        finish = [c.finish_reason for c in result.completions]
        if any(f != "stop" for f in finish):
            meta["finish_reasons"] = finish
        await self._record(
            episode_id=eid,
            step=step,
            role=role or self.role,
            model=result.model or self.name,
            usage=result.usage,
            latency_s=latency,
            meta=meta,
            kind="generate",
        )
        return result

    async def _record_failure(self, *, latency_s: float, **kw: Any) -> None:
        try:
            await self._record(model=self.name, usage=Usage(), latency_s=latency_s, ok=False, **kw)
        except asyncio.CancelledError:
            # Cancelled while recording: write synchronously so the call is not lost.
            kw.update(run_id=self.run_id, prices=self.prices)
            self.ledger.record_model_call(
                model=self.name, usage=Usage(), latency_s=latency_s, ok=False, **kw
            )
        except NightowlError:
            pass  # never mask the original failure

    async def score_continuations(
        self,
        prompt: str,
        continuations: list[str],
        *,
        episode_id: str | None = None,
        step: int | None = None,
        role: str | None = None,
    ) -> ScoredContinuations:
        """Score with the wrapped backend and record the call (``kind="score"``)."""
        eid = episode_id if episode_id is not None else self.episode_id
        meta: dict[str, Any] = {"continuations": len(continuations)}
        t0 = time.perf_counter()
        try:
            scored = await self.backend.score_continuations(prompt, continuations)
        except NotImplementedError:
            raise
        except BaseException as exc:
            meta["error"] = _error_text(exc)
            await self._record_failure(
                episode_id=eid, step=step, role=role or self.role, kind="score", meta=meta,
                latency_s=time.perf_counter() - t0,
            )
            raise
        await self._record(
            episode_id=eid,
            step=step,
            role=role or self.role,
            model=self.name,
            usage=scored.usage,
            latency_s=time.perf_counter() - t0,
            meta=meta,
            kind="score",
        )
        return scored

    def count_tokens(self, text: str) -> int:
        """Pass through to the wrapped backend (not recorded)."""
        return self.backend.count_tokens(text)

    async def aclose(self) -> None:
        """Close the wrapped backend."""
        await self.backend.aclose()


