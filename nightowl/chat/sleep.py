"""Per-thread sleep-time: rethink an idle conversation into a learned context c'.

While a thread is idle, `ThreadSleeper` turns its transcript up to revision r into
notes (facts, computed quantities, likely questions with answers) with the sleep-time
rethink loop of `nightowl.sleeptime.generate`, and stores c' valid up to r in one
transaction (`ThreadStore.save_context`), so a killed job leaves nothing half
written. The next turn is prompted with c' plus the messages after r; appending
messages keeps c' (only an edit of messages <= r drops it).

Rethinking is idempotent: a thread whose newest c' already covers its current
revision is left alone, and `save_context` refuses a second c' for a revision, so a
redelivered or duplicated job stores nothing new.

Scheduling (`run_idle`): poll for idle threads, rank them by expected queries x
predictability (`nightowl.chat._priority`), then either rethink each in-process or,
when a ``queue`` is given (the composition root passes the Celery enqueue when a
broker is configured), send each as a job to the ``sleep`` queue, once per revision.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel

from nightowl.chat._priority import ThreadWork, rank_threads, thread_predictability, transcript
from nightowl.chat.threads import LearnedThreadContext, ThreadRecord, ThreadStore
from nightowl.config import Prices
from nightowl.config_sleep import GeneratorConfig
from nightowl.ledger import Ledger, MeteredModel
from nightowl.llm.base import ModelBackend
from nightowl.sleeptime.generate import SleepModel
from nightowl.sleeptime.generate import rethink as rethink_notes
from nightowl.storage import Database

log = logging.getLogger(__name__)

#: sends one thread's rethink to a job queue: ``queue(thread_id, revision)``
RethinkQueue = Callable[[str, int], object]


class ThreadRethinkOutcome(BaseModel):
    """What one rethink job did (returned by the Celery task as JSON)."""

    thread_id: str
    status: Literal["rethought", "fresh", "empty", "superseded"]
    revision: int


class ThreadSleeper:
    """Rethinks idle threads into learned contexts (in-process or through a queue)."""

    def __init__(
        self,
        store: ThreadStore,
        model: SleepModel,
        prices: Prices,
        *,
        queue: RethinkQueue | None = None,
        scorer: ModelBackend | None = None,
    ) -> None:
        self.store = store
        self.model = model
        self.prices = prices
        self.config = GeneratorConfig(max_rounds=1, round_max_tokens=192, token_budget=192)
        self.queue = queue
        self.scorer = scorer
        self._predictability: dict[tuple[str, int], float | None] = {}
        self._enqueued: dict[str, int] = {}

    async def rethink(self, thread_id: str) -> ThreadRethinkOutcome:
        """Compute and store c' for the thread's current revision (idempotent).

        A thread whose newest c' already covers its current revision is a no-op
        (``fresh``); so is a save that lost to another job (``superseded``).
        """
        rec = await asyncio.to_thread(self.store.get, thread_id)
        latest = await asyncio.to_thread(self.store.latest_context, thread_id)
        if latest is not None and latest.revision >= rec.revision:
            return ThreadRethinkOutcome(
                thread_id=thread_id, status="fresh", revision=latest.revision
            )
        messages = await asyncio.to_thread(self.store.messages, thread_id)
        if not messages:
            return ThreadRethinkOutcome(thread_id=thread_id, status="empty", revision=0)
        progress = await rethink_notes(self.model, transcript(messages), self.config, self.prices)
        if not progress.text.strip():
            return ThreadRethinkOutcome(thread_id=thread_id, status="empty", revision=0)
        saved = await asyncio.to_thread(
            self.store.save_context,
            thread_id,
            len(messages),
            progress.text,
            prompt_tokens=progress.prompt_tokens,
            completion_tokens=progress.completion_tokens,
            cost_usd=progress.cost_usd,
        )
        return ThreadRethinkOutcome(
            thread_id=thread_id,
            status="rethought" if saved else "superseded",
            revision=len(messages),
        )

    async def rethink_thread(self, thread_id: str) -> LearnedThreadContext | None:
        """Rethink (see `rethink`) and return the thread's newest c', None if it has none."""
        await self.rethink(thread_id)
        return await asyncio.to_thread(self.store.latest_context, thread_id)

    async def ranked(
        self, threads: list[ThreadRecord], *, gate: Callable[[], bool] | None = None
    ) -> list[ThreadWork]:
        """``threads`` by expected queries x predictability (measured once per revision).

        Measuring runs the scorer, so it waits for ``gate`` like thinking does; a thread
        not measured yet ranks with the prior (see `rank_threads`).
        """
        turns = await asyncio.to_thread(self.store.user_turns, [t.id for t in threads])
        preds: dict[str, float | None] = {}
        for t in threads:
            key = (t.id, t.revision)
            measure = self.scorer is not None and (gate is None or gate())
            if key not in self._predictability and measure and self.scorer is not None:
                messages = await asyncio.to_thread(self.store.messages, t.id)
                self._predictability[key] = await thread_predictability(messages, self.scorer)
            preds[t.id] = self._predictability.get(key)
        return rank_threads(threads, turns, preds)

    async def pass_once(
        self, *, idle_s: float, gate: Callable[[], bool] | None = None
    ) -> list[str]:
        """One scheduling pass over idle threads, highest priority first.

        Returns the ids rethought (in-process) or enqueued (with a queue), in order.
        ``gate`` is asked before every thread.
        """
        threads = await asyncio.to_thread(self.store.idle_threads, idle_s)
        done: list[str] = []
        for work in await self.ranked(threads, gate=gate):
            t = work.thread
            if gate is not None and not gate():
                break
            if self.queue is not None:
                # One job per revision: the thread stays "idle" until the worker stores
                # c', and re-sending it every poll would only queue duplicate no-ops.
                if self._enqueued.get(t.id) != t.revision:
                    await asyncio.to_thread(self.queue, t.id, t.revision)
                    self._enqueued[t.id] = t.revision
                    done.append(t.id)
            else:
                await self.rethink(t.id)
                done.append(t.id)
        return done

    async def run_idle(
        self,
        *,
        idle_s: float,
        poll_s: float = 5.0,
        stop: asyncio.Event | None = None,
        gate: Callable[[], bool] | None = None,
    ) -> None:
        """Until ``stop`` is set: rethink threads idle for ``idle_s`` (`pass_once`).

        ``gate`` says whether the machine is idle enough to think now (the server passes
        "no request in flight"); it is asked before every thread, so serving traffic
        that returns pauses the pass.
        """
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                await self.pass_once(
                    idle_s=idle_s,
                    gate=lambda: not stop.is_set() and (gate is None or gate()),
                )
            except Exception:  # noqa: BLE001 - a background job must survive one bad thread
                log.exception("thread sleep-time pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=poll_s)


async def rethink_thread_job(
    db: Database, ledger: Ledger, backend: ModelBackend, prices: Prices, thread_id: str
) -> ThreadRethinkOutcome:
    """One queued rethink (the Celery task's body): idempotent, one transaction.

    A ledger run (kind ``chat-sleep``) is opened only when there is thinking to do, so
    a redelivered job for a thread that is already fresh records nothing.
    """
    store = ThreadStore(db)
    rec = await asyncio.to_thread(store.get, thread_id)
    latest = await asyncio.to_thread(store.latest_context, thread_id)
    if latest is not None and latest.revision >= rec.revision:
        return ThreadRethinkOutcome(thread_id=thread_id, status="fresh", revision=latest.revision)
    run_id = await asyncio.to_thread(ledger.start_run, "chat-sleep", kind="chat-sleep")
    model = MeteredModel(backend, ledger, prices, run_id=run_id, role="sleep")
    return await ThreadSleeper(store, model, prices).rethink(thread_id)
