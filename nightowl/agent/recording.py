"""The recording sink of the agent loop: ledger rows and step rows, one transaction a node.

A node queues its ledger rows (model calls through bound `MeteredModel`s, the
environment step as a tool call) in a `PendingWrites` and `StepRecorder.flush` writes
them, plus the step row, in one transaction before the node returns (and so before
LangGraph checkpoints it). On SQLite the write runs inline: one short local transaction
costs less than a hop to a worker thread; other databases are written from a thread.

Step rows go through the memory's `StepLog` interface (`record_new_steps`, inside the
ledger's transaction): by default the `SqlStepLog` of the ledger's database.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from nightowl.agent.ladder import TierDecision
from nightowl.ledger.pending import PendingWrites

if TYPE_CHECKING:
    from nightowl.memory.base import StepLog


class StepRecorder:
    """Writes what the loop records: episodes, ledger rows, step rows.

    Args:
        ledger: the cost ledger (None: nothing is recorded).
        record_steps: write one ``steps`` row per acted step.
        steps: where step rows go, in the ledger's transaction (default: the
            `SqlStepLog` of the ledger's database).
    """

    def __init__(
        self, ledger: Any, *, record_steps: bool = True, steps: StepLog | None = None
    ) -> None:
        self.ledger = ledger
        self.record_steps = record_steps
        db = getattr(ledger, "db", None)
        self._inline = bool(getattr(db, "is_sqlite", False))
        self._steps = steps

    @property
    def steps(self) -> StepLog:
        """The step log step rows are recorded in (the default one is made on first use)."""
        if self._steps is None:
            from nightowl.memory.steps import SqlStepLog  # the memory package loads faiss

            self._steps = SqlStepLog(getattr(self.ledger, "db", None))
        return self._steps

    def env_step(
        self, pending: PendingWrites, *, run_id: str, episode_id: str, step: int, env_name: str,
        latency_s: float, action: str, actor: str, error: str | None,
    ) -> None:
        """Queue the environment step as a tool call (``meta.actor`` feeds the teacher share)."""
        if self.ledger is None:
            return
        meta: dict[str, Any] = {"action": action[:200], "actor": actor}
        if error:
            meta["error"] = error
        pending.tool_call(
            self.ledger, run_id=run_id, episode_id=episode_id, step=step,
            tool=f"env:{env_name}", latency_s=latency_s, meta=meta,
        )

    async def flush(
        self, pending: PendingWrites, *, episode_id: str = "",
        step_row: dict[str, Any] | None = None,
    ) -> None:
        """Write the queued rows and the step row in one transaction."""
        if self.ledger is None:
            return
        rows = pending.take()
        extra = None
        if step_row is not None and self.record_steps:
            steps = self.steps

            def extra(tx: Any) -> None:
                # insert-if-absent: a resumed node writes its step again, the first stands
                steps.record_new_steps(episode_id, [step_row], within=tx)
        if rows or extra is not None:
            await self._write(self.ledger.write_rows, rows, extra)

    async def start_episode(self, run_id: str, task_id: str, env_name: str, split: str) -> str:
        """A new episode row; its id."""
        return str(self.ledger.start_episode(run_id, task_id, env_name, split))

    async def finish_episode(
        self, episode_id: str, won: bool, score: float, steps: int, reason: str,
        *, status: str = "done",
    ) -> None:
        """Record the episode's outcome (``status="error"``: an infrastructure error)."""
        if self.ledger is not None:
            await self._write(
                self.ledger.finish_episode, episode_id, won, score, steps, reason, status=status
            )

    async def _write(self, fn: Any, *args: Any, **kw: Any) -> None:
        """A ledger write: inline on SQLite, else in a worker thread."""
        if self._inline:
            fn(*args, **kw)
        else:
            await asyncio.to_thread(fn, *args, **kw)


def short_decision(dec: TierDecision) -> dict[str, Any]:
    """A decision as the few fields the step row and the checkpoint keep."""
    return {
        "tier": dec.tier,
        "action": dec.action,
        "reason": dec.reason[:160],
        "samples": dec.samples,
        "confidence": round(float(dec.confidence), 4),
        "candidates": [list(c) for c in dec.candidates[:4]],
    }
