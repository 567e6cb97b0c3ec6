"""Episode leases on SQLite and PostgreSQL: claim, fence, re-queue, late duplicates, report."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from nightowl.ledger import FencedLedger, LeaseLostError, LeaseStore, Ledger
from nightowl.ledger.leases import EpisodeLease
from nightowl.ledger.tables import Episode, ModelCall, ToolCall
from nightowl.llm.base import Usage
from nightowl.storage import utcnow


def _age(db, run_id: str, task_id: str, seconds: float) -> None:  # type: ignore[no-untyped-def]
    """Make a lease's heartbeat (and queue time) ``seconds`` old, as if its worker died."""
    then = utcnow() - timedelta(seconds=seconds)
    db.write(lambda s: s.execute(update(EpisodeLease).where(
        (EpisodeLease.run_id == run_id) & (EpisodeLease.task_id == task_id)
    ).values(heartbeat_at=then, queued_at=then)))


def _count(db, table) -> int:  # type: ignore[no-untyped-def]
    return db.read(lambda s: int(s.scalar(select(func.count()).select_from(table)) or 0))


def test_claim_fence_requeue_and_late_duplicate(db) -> None:  # type: ignore[no-untyped-def]
    ledger = Ledger(db)
    leases = LeaseStore(db)
    run = ledger.start_run("r", "run", {"tasks": ["a", "b"]})
    leases.enqueue(run, "a", {"job": "a"})
    leases.enqueue(run, "b", {"job": "b"})

    first = leases.claim(run, "a", 0, lease_s=30)
    assert first is not None and first.attempt == 1
    assert leases.claim(run, "a", 0, lease_s=30) is None  # live holder: duplicate refused
    assert leases.requeue_expired(30) == []  # nothing expired yet

    # the slow worker writes a step through its fenced ledger
    slow = FencedLedger(ledger, leases, first)
    eid = slow.start_episode(run, "a", "twx", "test")
    slow.write_rows([(ToolCall, ledger.tool_call_values(run_id=run, episode_id=eid, step=0,
                                                        tool="env:twx", latency_s=0.1))])
    assert leases.get(run, "a").step == 1  # type: ignore[union-attr]

    _age(db, run, "a", 60)
    moved = leases.requeue_expired(30)
    assert [(m.task_id, m.gen, m.payload) for m in moved] == [("a", 1, {"job": "a"})]
    assert "silent" in moved[0].reason and "step 1" in moved[0].reason
    assert leases.requeue_expired(30) == []  # a second monitor finds nothing to move

    # the old generation's message (the broker's redelivery) is refused
    assert leases.claim(run, "a", 0, lease_s=30) is None
    second = leases.claim(run, "a", 1, lease_s=30)
    assert second is not None and second.attempt == 2

    # the slow worker's late writes are refused and write nothing
    calls_before = _count(db, ModelCall)
    with pytest.raises(LeaseLostError):
        slow.record_model_call(run_id=run, episode_id=eid, step=1, role="student", model="m",
                               usage=Usage(prompt_tokens=5, completion_tokens=1),
                               latency_s=0.1, prices=ledger_prices())
    with pytest.raises(LeaseLostError):
        slow.finish_episode(eid, True, 1.0, 2, "won")
    assert _count(db, ModelCall) == calls_before
    assert not leases.heartbeat(first) and not leases.finish(first)

    # the new holder reuses the episode row (no second row) and finishes it
    fresh = FencedLedger(ledger, leases, second)
    assert fresh.start_episode(run, "a", "twx", "test") == eid
    fresh.finish_episode(eid, True, 1.0, 2, "won")
    assert leases.finish(second)
    assert _count(db, Episode) == 1
    row = leases.get(run, "a")
    assert row is not None and row.state == "done" and row.requeues == 1 and row.attempt == 2


def ledger_prices():  # type: ignore[no-untyped-def]
    from nightowl.config import Prices

    return Prices(input=1.0, output=1.0)


def test_lost_messages_are_resent_once_and_give_up(db) -> None:  # type: ignore[no-untyped-def]
    ledger = Ledger(db)
    leases = LeaseStore(db)
    run = ledger.start_run("r", "run", {})
    leases.enqueue(run, "a", {"job": "a"})
    assert leases.lost_messages(30) == []  # just queued
    _age(db, run, "a", 60)
    lost = leases.lost_messages(30)
    assert [(m.task_id, m.gen) for m in lost] == [("a", 0)]  # same generation: safe to resend
    assert leases.lost_messages(30) == []  # its clock restarted
    assert leases.give_up(run, "a", 0, "gave up")
    assert leases.get(run, "a").state == "failed"  # type: ignore[union-attr]
    assert leases.claim(run, "a", 0, lease_s=30) is None


def test_report_says_finished_of_planned_and_lists_in_flight(db) -> None:  # type: ignore[no-untyped-def]
    ledger = Ledger(db)
    leases = LeaseStore(db)
    tasks = [f"t{i}" for i in range(3)]
    run = ledger.start_run("r", "run", {"tasks": tasks})
    for t in tasks:
        leases.enqueue(run, t, {})
    done = leases.claim(run, "t0", 0, lease_s=30)
    assert done is not None
    eid = FencedLedger(ledger, leases, done).start_episode(run, "t0")
    ledger.finish_episode(eid, True, 1.0, 3, "won")
    leases.finish(done)
    held = leases.claim(run, "t1", 0, lease_s=30)
    assert held is not None
    FencedLedger(ledger, leases, held).start_episode(run, "t1")

    rep = ledger.run_report(run)
    assert rep.n_planned == 3 and rep.n_episodes == 2 and rep.n_finished == 1
    assert rep.progress == "1 of 3 finished"
    assert rep.queued == 1
    [flight] = rep.in_flight
    assert flight.task_id == "t1" and flight.pid == held.pid and flight.host == held.host
    assert flight.heartbeat_age_s is not None and flight.heartbeat_age_s < 30
    assert rep.requeued == [] and rep.failed == []
