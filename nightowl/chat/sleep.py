"""Per-thread sleep-time: rethink an idle conversation into a learned context c'.

While a thread is idle, `ThreadSleeper` turns its transcript up to revision r into
notes (facts, computed quantities, likely questions with answers) with the sleep-time
rethink loop of `nightowl.sleeptime.generate`, and stores c' valid up to r in one
transaction (`ThreadStore.save_context`), so a killed job leaves nothing half
written. The next turn is prompted with c' plus the messages after r; appending
messages keeps c' (only an edit of messages <= r drops it).

Scheduling is in-process (`run_idle`: poll for idle threads, oldest first). The
predictability x expected-queries priority of the sleep-time subsystem is not applied
to threads yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from nightowl.chat.threads import LearnedThreadContext, ThreadStore
from nightowl.config import Prices
from nightowl.llm.base import ChatMessage
from nightowl.sleeptime.generate import SleepModel, rethink
from nightowl.sleeptime.settings import GeneratorConfig

log = logging.getLogger(__name__)


def transcript(messages: list[ChatMessage]) -> str:
    """A conversation as the text the rethink loop studies."""
    return "\n".join(f"{m.role.capitalize()}: {m.content}" for m in messages)


class ThreadSleeper:
    """Rethinks idle threads into learned contexts."""

    def __init__(
        self,
        store: ThreadStore,
        model: SleepModel,
        prices: Prices,
        config: GeneratorConfig | None = None,
    ) -> None:
        self.store = store
        self.model = model
        self.prices = prices
        self.config = config or GeneratorConfig(
            max_rounds=1, round_max_tokens=192, token_budget=192
        )

    async def rethink_thread(self, thread_id: str) -> LearnedThreadContext | None:
        """Compute and store c' for the thread's current history; None if it is empty."""
        messages = await asyncio.to_thread(self.store.messages, thread_id)
        if not messages:
            return None
        progress = await rethink(self.model, transcript(messages), self.config, self.prices)
        if not progress.text.strip():
            return None
        await asyncio.to_thread(
            lambda: self.store.save_context(
                thread_id,
                len(messages),
                progress.text,
                prompt_tokens=progress.prompt_tokens,
                completion_tokens=progress.completion_tokens,
                cost_usd=progress.cost_usd,
            )
        )
        return await asyncio.to_thread(self.store.latest_context, thread_id)

    async def run_idle(
        self,
        *,
        idle_s: float,
        poll_s: float = 5.0,
        stop: asyncio.Event | None = None,
        min_new: int = 2,
        gate: Callable[[], bool] | None = None,
    ) -> None:
        """Until ``stop`` is set: rethink threads idle for ``idle_s`` (oldest first).

        ``gate`` says whether the machine is idle enough to think now (the server passes
        "no request in flight"); it is asked before every thread, so serving traffic
        that returns pauses the pass.
        """
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                threads = await asyncio.to_thread(self.store.idle_threads, idle_s, min_new=min_new)
                for t in threads:
                    if stop.is_set() or (gate is not None and not gate()):
                        break
                    await self.rethink_thread(t.id)
            except Exception:  # noqa: BLE001 - a background job must survive one bad thread
                log.exception("thread sleep-time pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=poll_s)
