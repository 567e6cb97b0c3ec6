"""The SQL of the ``steps`` table, and `SqlStepLog`: the `StepLog` of one database.

`SqlStepLog` is the step record without an embedder or indexes: the agent loop records
every step through the `StepLog` interface whether or not demo retrieval is on, and
`DemoMemory` records and reads its steps through one (its demo writes use `upsert_steps`).

Two ways to write a step that is already recorded (same episode and idx):
`upsert_steps` updates it (`StepLog.record_steps`), `insert_new_steps` leaves it as it
is (`StepLog.record_new_steps`: a resumed agent node writes its step again, and the
first write stands).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Table, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from nightowl.memory._records import StepRecord, as_step_records, step_record, step_values
from nightowl.memory.base import StepLog
from nightowl.memory.schema import IN_CHUNK, StepRow, utcnow


def _recorded(s: Session, episode_id: str, steps: Sequence[StepRecord]) -> dict[int, int]:
    """The step ids, by idx, of those of ``steps`` the episode has recorded already."""
    found: dict[int, int] = {}
    idxs = [st.idx for st in steps]
    for i in range(0, len(idxs), IN_CHUNK):
        for sid, idx in s.execute(
            select(StepRow.id, StepRow.idx).where(
                StepRow.episode_id == episode_id, StepRow.idx.in_(idxs[i : i + IN_CHUNK])
            )
        ):
            found[int(idx)] = int(sid)
    return found


def upsert_steps(s: Session, episode_id: str, steps: Sequence[StepRecord]) -> list[int]:
    """Insert or update steps by (episode_id, idx) with bulk statements; ids in order."""
    if not steps:
        return []
    existing = _recorded(s, episode_id, steps)
    updates = [{"id": existing[st.idx], **step_values(st)} for st in steps if st.idx in existing]
    if updates:
        s.execute(update(StepRow), updates)
    now = utcnow()
    new = [
        {"episode_id": episode_id, "idx": st.idx, "created_at": now, **step_values(st)}
        for st in steps
        if st.idx not in existing
    ]
    if new:
        rows = s.execute(
            insert(StepRow).returning(StepRow.id, StepRow.idx, sort_by_parameter_order=True), new
        )
        for sid, idx in rows:
            existing[int(idx)] = int(sid)
    return [existing[st.idx] for st in steps]


@functools.cache
def _insert_new(dialect: str) -> Any:
    """The insert-if-absent ``INSERT`` of SQLite or PostgreSQL, built once (compiled once)."""
    ins = pg_insert if dialect == "postgresql" else sqlite_insert
    table = cast(Table, StepRow.__table__)
    return ins(table).on_conflict_do_nothing(index_elements=["episode_id", "idx"])


def insert_new_steps(s: Session, episode_id: str, steps: Sequence[StepRecord]) -> None:
    """Insert the steps whose (episode_id, idx) is not recorded; recorded ones stay as they are.

    One statement; the first of repeated idxs wins.
    """
    if not steps:
        return
    now = utcnow()
    values = [
        {"episode_id": episode_id, "idx": st.idx, "created_at": now, **step_values(st)}
        for st in steps
    ]
    s.execute(_insert_new(s.get_bind().dialect.name), values)


class SqlStepLog(StepLog):
    """The recorded steps of one database (no embedder, no indexes; thread-safe).

    Args:
        db: a `nightowl.storage.Database` (``.write``, ``.read``); it may be None when
            every write joins a caller's transaction (``within``).
    """

    def __init__(self, db: Any) -> None:
        self.db = db

    def record_steps(
        self, episode_id: str, steps: Sequence[StepRecord | dict[str, Any]]
    ) -> list[int]:
        """Save steps (upsert on (episode_id, idx)); their ids in order."""
        recs = as_step_records(steps)
        ids: list[int] = self.db.write(lambda s: upsert_steps(s, episode_id, recs))
        return ids

    def record_new_steps(
        self,
        episode_id: str,
        steps: Sequence[StepRecord | dict[str, Any]],
        *,
        within: Any = None,
    ) -> None:
        """Save the steps not recorded yet, in ``within`` (a `Session`) or its own transaction."""
        recs = as_step_records(steps)
        if within is not None:
            insert_new_steps(within, episode_id, recs)
        else:
            self.db.write(lambda s: insert_new_steps(s, episode_id, recs))

    def episode_steps(self, episode_id: str) -> list[StepRecord]:
        """Every recorded step of an episode, ordered by idx ([] if none)."""
        stmt = select(StepRow).where(StepRow.episode_id == episode_id).order_by(StepRow.idx)
        steps: list[StepRecord] = self.db.read(lambda s: [step_record(r) for r in s.scalars(stmt)])
        return steps
