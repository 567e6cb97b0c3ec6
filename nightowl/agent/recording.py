"""The recording sink of the agent loop: ledger rows and step rows, one transaction a node.

A node queues its ledger rows (model calls through bound `MeteredModel`s, the
environment step as a tool call) in a `PendingWrites` and `StepRecorder.flush` writes
them, plus the step row, in one transaction before the node returns (and so before
LangGraph checkpoints it). On SQLite the write runs inline: one short local transaction
costs less than a hop to a worker thread; other databases are written from a thread.
"""

from __future__ import annotations

import asyncio
import functools
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from nightowl.agent.ladder import TierDecision
from nightowl.ledger.pending import PendingWrites


class StepRecorder:
    """Writes what the loop records: episodes, ledger rows, step rows.

    Args:
        ledger: the cost ledger (None: nothing is recorded).
        record_steps: write one ``steps`` row per acted step.
    """

    def __init__(self, ledger: Any, *, record_steps: bool = True) -> None:
        self.ledger = ledger
        self.record_steps = record_steps
        db = getattr(ledger, "db", None)
        self._inline = bool(getattr(db, "is_sqlite", False))

    def pending(self) -> PendingWrites:
        """A fresh buffer for one node's rows."""
        return PendingWrites()

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
            def extra(s: Session) -> None:
                _upsert_step(s, episode_id, step_row)
        if not rows and extra is None:
            return
        if self._inline:
            self.ledger.write_rows(rows, extra)
        else:
            await asyncio.to_thread(self.ledger.write_rows, rows, extra)

    async def start_episode(self, run_id: str, task_id: str, env_name: str, split: str) -> str:
        """A new episode row; its id."""
        return str(self.ledger.start_episode(run_id, task_id, env_name, split))

    async def finish_episode(
        self, episode_id: str, won: bool, score: float, steps: int, reason: str,
        *, status: str = "done",
    ) -> None:
        """Record the episode's outcome (``status="error"``: an infrastructure error)."""
        if self.ledger is None:
            return
        if self._inline:
            self.ledger.finish_episode(episode_id, won, score, steps, reason, status=status)
        else:
            await asyncio.to_thread(
                self.ledger.finish_episode, episode_id, won, score, steps, reason, status=status
            )


@functools.cache
def _step_insert(dialect: str) -> Any:
    """The step-row ``INSERT`` for a dialect, built once (so SQLAlchemy compiles it once).

    SQLite and PostgreSQL skip an existing (episode, idx) in the same statement.
    """
    from nightowl.memory.schema import StepRow

    table = cast(Table, StepRow.__table__)
    ins: Any
    if dialect == "sqlite":
        ins = sqlite_insert(table)
    elif dialect == "postgresql":
        ins = pg_insert(table)
    else:
        return None
    return ins.on_conflict_do_nothing(index_elements=["episode_id", "idx"])
    return None


def _upsert_step(s: Session, episode_id: str, row: dict[str, Any]) -> None:
    """Insert the step unless (episode, idx) exists (a resumed node writes it again)."""
    from nightowl.memory.schema import StepRow

    values = {"episode_id": episode_id, "reasoning": None, "created_at": datetime.now(UTC), **row}
    stmt = _step_insert(s.get_bind().dialect.name)
    if stmt is not None:
        s.execute(stmt, [values])
        return
    exists = s.execute(
        select(StepRow.id).where(StepRow.episode_id == episode_id, StepRow.idx == row["idx"])
    ).first()
    if exists is None:
        s.execute(insert(cast(Table, StepRow.__table__)), [values])


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
