"""`FencedLedger`: the ledger of one leased episode, every write checked against the lease.

The agent loop writes a step's rows in one transaction; through a `FencedLedger` that
transaction also refreshes the lease's heartbeat and step, and fails with
`LeaseLostError` (writing nothing) when the lease was taken over -- so a worker that
was only slow cannot bill a step, or record an outcome, after another worker took its
episode. Reads and everything else go to the wrapped `Ledger`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from nightowl.ledger._core import Ledger
from nightowl.ledger.leases import Holder, LeaseStore
from nightowl.ledger.tables import _new_id


class FencedLedger:
    """A `Ledger` whose episode writes are fenced by ``holder``'s lease.

    Args:
        ledger: the ledger to write to.
        leases: the lease store (same database).
        holder: this worker's lease (run, task, attempt).
    """

    def __init__(self, ledger: Ledger, leases: LeaseStore, holder: Holder) -> None:
        self._ledger = ledger
        self.leases = leases
        self.holder = holder

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ledger, name)

    def _fence(self, step: int | None = None, **values: Any) -> Any:
        return lambda s: self.leases.fence(s, self.holder, step=step, **values)

    def write_rows(self, rows: list[tuple[Any, dict[str, Any]]], extra: Any = None) -> None:
        """`Ledger.write_rows` plus the fence (and the step reached) in one transaction."""
        steps = [v["step"] for _, v in rows if v.get("step") is not None]
        fence = self._fence(step=max(steps) + 1 if steps else None)

        def both(s: Session) -> None:
            fence(s)
            if extra is not None:
                extra(s)

        self._ledger.write_rows(rows, both)

    # Ledger's own: they write through ``self.write_rows``, which here is fenced
    record_model_call = Ledger.record_model_call
    record_tool_call = Ledger.record_tool_call

    def start_episode(
        self, run_id: str, task_id: str, env: str = "", split: str = "", **_: Any
    ) -> str:
        """The lease's episode row, created once.

        A retry before the first checkpoint reuses it instead of leaving a second,
        never-finished row.
        """
        h = self.holder
        row = self.leases.get(h.run_id, h.task_id)
        if row is not None and row.episode_id:
            self.leases.db.write(self._fence(step=0))
            return row.episode_id

        eid = _new_id()
        return self._ledger.start_episode(run_id, task_id, env, split, episode_id=eid,
                                          extra=self._fence(step=0, episode_id=eid))

    def finish_episode(
        self, episode_id: str, success: bool, score: float | None = None, n_steps: int = 0,
        reason: str | None = None, *, status: str = "done",
    ) -> None:
        """`Ledger.finish_episode`, fenced (refused when the lease was lost)."""
        self._ledger.finish_episode(episode_id, success, score, n_steps, reason, status=status,
                                    extra=self._fence(step=n_steps))
