"""Sleep-time service: the functions the CLI, the in-process runner and Celery tasks call.

`SleepService` wires settings, the database, the ledger and model backends together
(the composition root of sleep-time compute). `learn` runs one job — compute the c'
of one context under one generator config — with the idle gate, the idempotent claim
and resumable progress; `ask` answers a query; `plan` lists the contexts that need a
c', highest priority first.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from nightowl.config import Prices, Settings, get_settings
from nightowl.config_sleep import GeneratorConfig
from nightowl.ledger import Ledger, MeteredModel
from nightowl.ledger.tables import detached
from nightowl.llm.base import ModelBackend
from nightowl.sleeptime.answer import AnswerBudget, AnswerResult, answer
from nightowl.sleeptime.generate import ClaimLostError, RethinkHooks, Yielded, rethink
from nightowl.sleeptime.idle import IdleProbe, probe_for
from nightowl.sleeptime.policy import WorkItem, measure_predictability, needing_refresh
from nightowl.sleeptime.schema import utcnow
from nightowl.sleeptime.store import ContextRecord, ContextStore, LearnedRecord, Progress
from nightowl.storage import Database

JobStatus = Literal["stored", "exists", "held", "busy", "yielded", "lost"]
#: statuses after which the job must run again later (it is never dropped)
RETRY_STATUSES: frozenset[str] = frozenset({"held", "busy", "yielded"})


class JobOutcome(BaseModel):
    """What one sleep-time job did (also the Celery task's JSON result)."""

    status: JobStatus
    context_id: str
    learned_id: int | None = None
    rounds: int = 0
    stop_reason: str = ""
    completion_tokens: int = 0
    cost_usd: float = 0.0
    retry_in_s: float = 0.0
    detail: str = ""


def worker_id(tag: str = "") -> str:
    """host:pid[:tag] — who holds a claim."""
    base = f"{socket.gethostname()}:{os.getpid()}"
    return f"{base}:{tag or uuid.uuid4().hex[:8]}"


class SleepService:
    """Sleep-time compute over one database.

    It opens nothing itself: the database (and optionally its ledger and a backend
    factory) come from the caller, normally the composition root (``Nightowl.sleep``).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        db: Database,
        ledger: Ledger | None = None,
        backend_factory: Callable[[str], ModelBackend] | None = None,
        probe: IdleProbe | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.sleep = self.settings.sleep
        self.db = db
        self.store = ContextStore(self.db.sessions)
        self.ledger = ledger if ledger is not None else Ledger(self.db)
        self._backend_factory = backend_factory
        self.probe: IdleProbe = probe or probe_for(self.sleep)

    # --- models --------------------------------------------------------------------
    def backend(self, name: str) -> ModelBackend:
        """The backend for a registry name (or from the injected factory)."""
        if self._backend_factory is not None:
            return self._backend_factory(name)
        from nightowl.llm.registry import build_backend

        return build_backend(name, self.settings)

    def prices(self, name: str) -> Prices:
        """Registry prices of a model (zero for ad-hoc test models)."""
        spec = self.settings.models.get(name)
        return spec.prices if spec is not None else Prices(input=0.0, cached_input=0.0, output=0.0)

    def metered(self, name: str, *, run_id: str, role: str) -> MeteredModel:
        """A backend whose every call lands in the ledger under ``role``."""
        return MeteredModel(
            self.backend(name), self.ledger, self.prices(name), run_id=run_id, role=role
        )

    # --- jobs ----------------------------------------------------------------------
    async def learn(
        self,
        ref: str,
        config: GeneratorConfig | None = None,
        *,
        worker: str | None = None,
        probe: IdleProbe | None = None,
    ) -> JobOutcome:
        """Compute (or resume) the c' of one context; idempotent per (content, config).

        Returns an outcome instead of raising for the expected cases: "exists" (a c'
        for this content and config is already stored), "busy" (serving is not idle:
        run later), "held" (another live worker holds the job: run later), "yielded"
        (serving came back between rounds; progress saved: run later), "lost" (our
        claim was taken over after our heartbeat went stale; nothing stored by us).
        """
        ctx = self.store.get(ref)
        config = config or self.sleep.generator()
        worker = worker or worker_id()
        probe = probe or self.probe
        chash = config.config_hash()
        if done := self.store.learned_for(ctx.id, key=(ctx.content_hash, chash)):
            return self._outcome("exists", ctx, done[0].id, done[0])
        reading = probe.check()
        if not reading.idle:
            return JobOutcome(
                status="busy",
                context_id=ctx.id,
                retry_in_s=self.sleep.busy_countdown_s,
                detail=reading.reason,
            )
        claim = self.store.claim(ctx, config, worker=worker, lease_s=self.sleep.lease_s)
        if not claim.claimed:
            if claim.learned.state == "done":
                return self._outcome("exists", ctx, claim.learned.id, claim.learned)
            return JobOutcome(
                status="held",
                context_id=ctx.id,
                learned_id=claim.learned.id,
                retry_in_s=self._lease_left(claim.learned.heartbeat_at),
                detail=f"held by {claim.learned.claimed_by}",
            )
        learned = claim.learned
        run_id = self.ledger.start_run(
            f"sleep {ctx.id[:8]} v{learned.version}",
            "sleep",
            {"context_id": ctx.id, "learned_id": learned.id, "generator": config.model_dump()},
        )
        start = None
        if learned.rounds > 0 and learned.text:  # resume what a predecessor saved
            start = detached(Progress, learned, stop_reason="", run_id=None)
        model = self.metered(config.model, run_id=run_id, role="sleep")

        hooks = RethinkHooks(
            on_round=functools.partial(self.store.save_progress, learned.id, worker),
            should_yield=lambda: not probe.check().idle,
        )
        try:
            final = await rethink(
                model, ctx.content, config, model.prices, start=start, hooks=hooks
            )
        except Yielded as y:
            self.store.pause(learned.id, worker, y.progress)
            return JobOutcome(
                status="yielded",
                context_id=ctx.id,
                learned_id=learned.id,
                rounds=y.progress.rounds,
                retry_in_s=self.sleep.busy_countdown_s,
                detail="serving traffic returned; progress saved",
            )
        except ClaimLostError as exc:
            return JobOutcome(
                status="lost", context_id=ctx.id, learned_id=learned.id, detail=str(exc)
            )
        except BaseException as exc:
            self.store.fail(learned.id, worker, f"{type(exc).__name__}: {exc}")
            raise
        if not self.store.finish(learned.id, worker, final):
            return JobOutcome(
                status="lost",
                context_id=ctx.id,
                learned_id=learned.id,
                detail="claim taken over before the result was stored",
            )
        return self._outcome("stored", ctx, learned.id, final)

    def _lease_left(self, heartbeat: datetime | None) -> float:
        if heartbeat is None:
            return self.sleep.busy_countdown_s
        age = (utcnow() - heartbeat).total_seconds()  # `LearnedRecord` times are UTC
        return max(1.0, self.sleep.lease_s - age + 1.0)

    @staticmethod
    def _outcome(
        status: JobStatus, ctx: ContextRecord, learned_id: int, done: LearnedRecord | Progress
    ) -> JobOutcome:
        return JobOutcome(
            status=status,
            context_id=ctx.id,
            learned_id=learned_id,
            rounds=done.rounds,
            stop_reason=done.stop_reason,
            completion_tokens=done.completion_tokens,
            cost_usd=done.cost_usd,
        )

    def learn_sync(
        self, ref: str, config: GeneratorConfig | None = None, **kw: object
    ) -> JobOutcome:
        """`learn` for synchronous callers (Celery tasks, the CLI)."""
        return asyncio.run(self.learn(ref, config, **kw))  # type: ignore[arg-type]

    # --- planning ------------------------------------------------------------------
    def plan(self, *, measure: bool = False) -> list[WorkItem]:
        """Contexts that need a c' now, highest priority first.

        With ``measure``, first measure log p(q|c) for pending contexts that have past
        queries but no measurement (only if the sleep model can score continuations).
        """
        items = needing_refresh(self.store, self.sleep)
        if not measure:
            return items
        todo = [w.context for w in items if w.context.predictability is None]
        counts = self.store.query_counts()
        todo = [c for c in todo if counts.get(c.id)]
        if not todo:
            return items
        run_id = self.ledger.start_run("sleep predictability", "sleep", {"contexts": len(todo)})
        scorer = self.metered(self.sleep.model, run_id=run_id, role="sleep")

        async def _measure() -> None:
            for ctx in todo:
                await measure_predictability(self.store, ctx, scorer)

        asyncio.run(_measure())
        return needing_refresh(self.store, self.sleep)

    def schedulable(self) -> list[str]:
        """Context ids to enqueue now: `plan` minus jobs a live worker is running.

        Predictability is measured first when serving is idle (it uses the model).
        """
        config = self.sleep.generator()
        chash = config.config_hash()
        items = self.plan(measure=self.probe.check().idle)
        out = []
        for item in items:
            ctx = item.context
            rows = self.store.learned_for(ctx.id, state=None, key=(ctx.content_hash, chash))
            if rows and rows[0].state in ("running", "paused"):
                age = (utcnow() - (rows[0].heartbeat_at or utcnow())).total_seconds()
                if age < self.sleep.lease_s:
                    continue  # a live job owns it (running) or re-queued itself (paused)
            out.append(item.context.id)
        return out

    # --- queries -------------------------------------------------------------------
    async def ask(
        self,
        ref: str,
        query: str,
        *,
        budget: str | AnswerBudget = "mid",
        mode: str = "with",
        use_learned: bool = True,
        record: bool = True,
        run_id: str | None = None,
    ) -> AnswerResult:
        """Answer a query about a context (with its fresh c' when one exists)."""
        ctx = self.store.get(ref)
        name = self.sleep.answer_model or self.sleep.model
        run_id = run_id or self.ledger.start_run(
            f"sleep ask {ctx.id[:8]}",
            "sleep-ask",
            {"budget": getattr(budget, "name", budget), "mode": mode},
        )
        model = self.metered(name, run_id=run_id, role="student")
        return await answer(
            self.store,
            ctx,
            query,
            model=model,
            prices=model.prices,
            budget=budget,
            mode=mode,
            use_learned=use_learned,
            config_hash=self.sleep.generator().config_hash(),
            record=record,
        )
