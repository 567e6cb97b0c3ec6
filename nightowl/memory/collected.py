"""Which tasks already have a collected demo from a given teacher (idempotent collection).

A demo remembers its episode; the ledger remembers the episode's task and the run's
teacher. `collected_demos` joins the three, so `collect` can skip (or replace) tasks
that the same teacher already solved instead of storing a second demo of each.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select

from nightowl.ledger.tables import Episode, Run
from nightowl.memory.schema import DemoRow
from nightowl.storage import Database


def collected_demos(
    db: Database,
    env: str,
    task_ids: Sequence[str],
    teacher: str,
    *,
    exclude_run: str | None = None,
) -> dict[str, list[str]]:
    """Task id -> episode ids of its demos collected by ``teacher`` (oldest first).

    Args:
        db: the database holding the ledger and the demo memory.
        env: the environment the tasks belong to.
        task_ids: the tasks asked about.
        teacher: the teacher name a collection run recorded (``oracle`` or a model).
        exclude_run: leave out demos of this run (a resumed collection is not a repeat).
    """
    wanted = set(task_ids)
    if not wanted:
        return {}
    stmt = (
        select(Episode.task_id, DemoRow.episode_id, Run.id, Run.config)
        .join(Episode, Episode.id == DemoRow.episode_id)
        .join(Run, Run.id == Episode.run_id)
        .where(DemoRow.source == "collect", Run.kind == "collect", Episode.env == env)
        .where(Episode.task_id.in_(sorted(wanted)))
        .order_by(DemoRow.id)
    )
    out: dict[str, list[str]] = {}
    with db.session() as s:
        for task_id, episode_id, run_id, config in s.execute(stmt):
            if run_id == exclude_run or (config or {}).get("teacher") != teacher:
                continue
            out.setdefault(task_id, []).append(episode_id)
    return out
