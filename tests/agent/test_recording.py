"""`StepRecorder`: ledger rows and the step row in one transaction, through `StepLog` only."""

from __future__ import annotations

import ast
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from nightowl.agent import recording
from nightowl.agent.recording import StepRecorder
from nightowl.ledger import FencedLedger, LeaseLostError, LeaseStore, Ledger
from nightowl.ledger.leases import EpisodeLease
from nightowl.ledger.pending import PendingWrites
from nightowl.ledger.tables import ToolCall
from nightowl.memory import SqlStepLog, StepLog, StepRecord
from nightowl.memory.schema import StepRow
from nightowl.storage import utcnow


def _step_row(idx: int, **kw: Any) -> dict[str, Any]:
    """A step row as `AgentGraph._act` builds it."""
    row: dict[str, Any] = {
        "idx": idx,
        "observation": f"You are in room {idx}.",
        "action": "go north",
        "reward": 0.0,
        "score": 0.5,
        "done": False,
        "actor": "student",
        "valid_actions": ["go north", "look"],
        "meta": {"trail": [{"tier": "student", "action": "go north"}], "goal": "find the coin"},
    }
    row.update(kw)
    return row


async def _act(rec: StepRecorder, ledger: Any, run: str, ep: str, row: dict[str, Any]) -> None:
    """One acted step: the environment step queued as a tool call, then the flush."""
    pending = PendingWrites()
    rec.env_step(pending, run_id=run, episode_id=ep, step=row["idx"], env_name="twx",
                 latency_s=0.01, action=row["action"], actor="student", error=None)
    await rec.flush(pending, episode_id=ep, step_row=row)


def _steps(db: Any, ep: str) -> list[dict[str, Any]]:
    def q(s: Any) -> list[dict[str, Any]]:
        table = StepRow.__table__
        rows = s.execute(select(table).where(table.c.episode_id == ep).order_by(table.c.idx))
        return [dict(r._mapping) for r in rows]

    return db.read(q)  # type: ignore[no-any-return]


def _calls(db: Any, ep: str) -> int:
    return int(db.read(lambda s: s.scalar(
        select(func.count()).select_from(ToolCall).where(ToolCall.episode_id == ep)
    )))


async def test_flush_writes_the_step_row_and_ledger_rows(db: Any) -> None:
    ledger = Ledger(db)
    run = ledger.start_run("r", "run", {})
    ep = ledger.start_episode(run, "t", "twx", "test")
    rec = StepRecorder(ledger)
    await _act(rec, ledger, run, ep, _step_row(0))
    (row,) = _steps(db, ep)
    want = _step_row(0)
    assert {k: row[k] for k in want} == want
    assert row["episode_id"] == ep and row["reasoning"] is None and row["created_at"] is not None
    assert _calls(db, ep) == 1
    assert isinstance(rec.steps, SqlStepLog)

    # a resumed node records its step again: one row, the first one
    await _act(rec, ledger, run, ep, _step_row(0, observation="changed"))
    assert _steps(db, ep) == [row]
    await _act(rec, ledger, run, ep, _step_row(1))
    assert [r["idx"] for r in _steps(db, ep)] == [0, 1]

    # record_steps=False: the ledger rows only
    quiet = StepRecorder(ledger, record_steps=False)
    await _act(quiet, ledger, run, ep, _step_row(2))
    assert [r["idx"] for r in _steps(db, ep)] == [0, 1] and _calls(db, ep) == 4


async def test_a_lost_lease_writes_no_step_row(db: Any) -> None:
    ledger = Ledger(db)
    leases = LeaseStore(db)
    run = ledger.start_run("r", "run", {"tasks": ["a"]})
    leases.enqueue(run, "a", {"job": "a"})
    first = leases.claim(run, "a", 0, lease_s=30)
    assert first is not None
    slow = FencedLedger(ledger, leases, first)
    ep = slow.start_episode(run, "a", "twx", "test")
    rec = StepRecorder(slow)
    await _act(rec, slow, run, ep, _step_row(0))
    assert len(_steps(db, ep)) == 1

    then = utcnow() - timedelta(seconds=60)
    db.write(lambda s: s.execute(update(EpisodeLease).where(
        (EpisodeLease.run_id == run) & (EpisodeLease.task_id == "a")
    ).values(heartbeat_at=then, queued_at=then)))
    assert leases.requeue_expired(30)
    assert leases.claim(run, "a", 1, lease_s=30) is not None
    with pytest.raises(LeaseLostError):  # the fence fails: the step row goes with it
        await _act(rec, slow, run, ep, _step_row(1))
    assert [r["idx"] for r in _steps(db, ep)] == [0] and _calls(db, ep) == 1


class _Log(StepLog):
    """A step log that only remembers what it was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[Any], Any]] = []

    def record_steps(self, episode_id: str, steps: Any) -> list[int]:
        raise AssertionError("the recorder inserts, it never updates")

    def record_new_steps(self, episode_id: str, steps: Any, *, within: Any = None) -> None:
        self.calls.append((episode_id, list(steps), within))

    def episode_steps(self, episode_id: str) -> list[StepRecord]:
        return []


async def test_steps_go_through_the_step_log(ledger: Ledger) -> None:
    run = ledger.start_run("r", "run", {})
    ep = ledger.start_episode(run, "t", "twx", "test")
    log = _Log()
    rec = StepRecorder(ledger, steps=log)
    await _act(rec, ledger, run, ep, _step_row(0))
    ((episode, steps, within),) = log.calls
    assert (episode, steps) == (ep, [_step_row(0)])
    assert within is not None  # the ledger's open transaction
    assert _steps(ledger.db, ep) == [] and _calls(ledger.db, ep) == 1


def test_recording_uses_no_sql_of_its_own() -> None:
    tree = ast.parse(Path(recording.__file__).read_text())
    mods = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    mods += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in mods if m.split(".")[0] == "sqlalchemy"]
    assert "nightowl.memory.schema" not in mods
