"""Conformance suite of the `StepLog` interface (`nightowl.memory.base`).

Every step log runs these tests: `SqlStepLog` (the agent loop's default) and every demo
store of the `DemoStore` suite (``STORES`` in ``test_demo_store.py``: a `DemoStore` is a
`StepLog`), each on SQLite and, when ``NIGHTOWL_TEST_PG_URL`` is set, on PostgreSQL.
The focus is `record_new_steps`, the agent loop's per-step write: insert-if-absent on
(episode_id, idx) -- recording a step twice (a resumed node) leaves one row, the first --
and, with ``within``, a write that commits or rolls back with the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from nightowl.ledger import Ledger
from nightowl.ledger.tables import ToolCall
from nightowl.memory import DemoStore, SqlStepLog, StepLog, StepRecord

from .test_demo_store import STORES as DEMO_STORES


@dataclass
class LogHarness:
    """A step log under test, its database (None: not a SQL store) and fresh episodes."""

    log: StepLog
    db: Any
    new_episode: Callable[[], str]
    close: Callable[[], None]


def _sql_step_log(db: Any) -> LogHarness:
    ledger = Ledger(db)
    run = ledger.start_run("step-log", "run", {})
    return LogHarness(
        log=SqlStepLog(db),
        db=db,
        new_episode=lambda: ledger.start_episode(run, "t-1", "tw", "test"),
        close=lambda: None,
    )


def _postgres_db(request: pytest.FixtureRequest) -> Any:
    from nightowl.storage import open_db

    return open_db(url=request.getfixturevalue("pg_schema_url"))


def _from_demo_store(name: str) -> Callable[[pytest.FixtureRequest, Path], LogHarness]:
    def make(request: pytest.FixtureRequest, tmp_path: Path) -> LogHarness:
        h = DEMO_STORES[name](request, tmp_path)
        assert isinstance(h.store, DemoStore)
        return LogHarness(
            log=h.store,
            db=getattr(h.store, "db", None),
            new_episode=lambda: h.new_episode("t-1"),
            close=h.store.close,
        )

    return make


_RUN_OF = text("SELECT run_id FROM episodes WHERE id = :e")

#: name -> factory(request, tmp_path); every `DemoStore` of the demo-store suite is included
LOGS: dict[str, Callable[[pytest.FixtureRequest, Path], LogHarness]] = {
    "sql-step-log-sqlite": lambda request, tmp_path: _sql_step_log(
        request.getfixturevalue("sqlite_db")
    ),
    "sql-step-log-postgresql": lambda request, tmp_path: _sql_step_log(_postgres_db(request)),
    **{name: _from_demo_store(name) for name in DEMO_STORES},
}


def _marks(name: str) -> list[pytest.MarkDecorator]:
    return [pytest.mark.postgres] if name.endswith("-postgresql") else []


@pytest.fixture(params=[pytest.param(name, marks=_marks(name)) for name in LOGS])
def lh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LogHarness]:
    harness = LOGS[request.param](request, tmp_path)
    try:
        yield harness
    finally:
        harness.close()


def _sql(lh: LogHarness) -> Any:
    if lh.db is None:
        pytest.skip("not a SQL store: no caller's transaction to join")
    return lh.db


def _step(idx: int, **kw: Any) -> dict[str, Any]:
    """A step row as the agent loop builds it."""
    row: dict[str, Any] = {
        "idx": idx,
        "observation": f"You are in room {idx}.",
        "action": "go north",
        "reward": 0.0,
        "score": 0.25 * idx,
        "done": False,
        "actor": "student",
        "valid_actions": ["go north", "look"],
        "meta": {"trail": [{"tier": "student"}], **({"goal": "find the coin"} if idx == 0 else {})},
    }
    row.update(kw)
    return row


def _view(st: StepRecord) -> tuple[Any, ...]:
    return (st.idx, st.observation, st.action, st.reasoning, st.reward, st.score, st.done,
            st.actor, st.valid_actions, st.meta)


def test_is_a_step_log(lh: LogHarness) -> None:
    assert isinstance(lh.log, StepLog)


def test_record_new_steps_writes_every_field(lh: LogHarness) -> None:
    ep = lh.new_episode()
    assert lh.log.record_new_steps(ep, [_step(1, done=True, reward=1.0), _step(0)]) is None
    got = lh.log.episode_steps(ep)
    want = [StepRecord(**_step(0)), StepRecord(**_step(1, done=True, reward=1.0))]
    assert [_view(s) for s in got] == [_view(s) for s in want]
    assert got[0].reasoning is None and all(s.id is not None for s in got)
    lh.log.record_new_steps(ep, [])  # nothing to write
    assert len(lh.log.episode_steps(ep)) == 2


def test_recording_the_same_step_twice_leaves_one_row(lh: LogHarness) -> None:
    ep = lh.new_episode()
    lh.log.record_new_steps(ep, [_step(0)])
    first = lh.log.episode_steps(ep)
    lh.log.record_new_steps(ep, [_step(0)])  # a resumed node writes its step again
    lh.log.record_new_steps(ep, [_step(0, observation="changed", action="go south")])
    again = lh.log.episode_steps(ep)
    assert len(again) == 1
    assert again == first  # the first write stands, same id
    assert again[0].observation == "You are in room 0." and again[0].action == "go north"


def test_only_new_steps_are_added(lh: LogHarness) -> None:
    ep = lh.new_episode()
    lh.log.record_new_steps(ep, [_step(0), _step(1)])
    ids = [s.id for s in lh.log.episode_steps(ep)]
    lh.log.record_new_steps(
        ep, [_step(1, action="changed"), _step(2), _step(2, action="second"), _step(3)]
    )
    got = lh.log.episode_steps(ep)
    assert [s.idx for s in got] == [0, 1, 2, 3]
    assert [s.id for s in got[:2]] == ids
    assert [s.action for s in got] == ["go north"] * 4  # recorded stay; a repeat: first counts
    assert len({s.id for s in got}) == 4


def test_record_new_steps_and_record_steps_share_rows(lh: LogHarness) -> None:
    ep = lh.new_episode()
    (sid,) = lh.log.record_steps(ep, [_step(0, action="upserted")])
    lh.log.record_new_steps(ep, [_step(0, action="kept out")])
    got = lh.log.episode_steps(ep)
    assert [(s.id, s.action) for s in got] == [(sid, "upserted")]
    lh.log.record_new_steps(ep, [_step(1)])
    assert lh.log.record_step(ep, StepRecord(**_step(1, action="updated"))) == (
        lh.log.episode_steps(ep)[1].id
    )
    assert [s.action for s in lh.log.episode_steps(ep)] == ["upserted", "updated"]


def test_within_joins_the_callers_transaction(lh: LogHarness) -> None:
    db = _sql(lh)
    ep = lh.new_episode()
    ledger = Ledger(db)
    run = db.read(lambda s: s.scalar(_RUN_OF, {"e": ep}))
    call = ledger.tool_call_values(run_id=run, episode_id=ep, step=0, tool="env:tw",
                                   latency_s=0.01)
    # the agent loop's write: ledger rows and the step row in one transaction
    ledger.write_rows(
        [(ToolCall, call)], lambda s: lh.log.record_new_steps(ep, [_step(0)], within=s)
    )
    assert [s.idx for s in lh.log.episode_steps(ep)] == [0]
    assert _count_calls(db, ep) == 1

    # a transaction that fails after the step was written keeps nothing of it
    def fails(s: Any) -> None:
        lh.log.record_new_steps(ep, [_step(1)], within=s)
        raise RuntimeError("the caller's transaction fails")

    with pytest.raises(RuntimeError):
        db.write(fails)
    assert [s.idx for s in lh.log.episode_steps(ep)] == [0]

    # and a resumed write of the committed step changes nothing inside one either
    ledger.write_rows(
        [(ToolCall, call)],
        lambda s: lh.log.record_new_steps(ep, [_step(0, action="again")], within=s),
    )
    assert [(s.idx, s.action) for s in lh.log.episode_steps(ep)] == [(0, "go north")]


def _count_calls(db: Any, ep: str) -> int:
    return int(db.read(lambda s: s.scalar(
        select(func.count()).select_from(ToolCall).where(ToolCall.episode_id == ep)
    )))
