"""Conformance suite of the `DemoStore` interface (`nightowl.memory.base`).

Every demo store registers a factory in ``STORES``; each test runs against each of them.
`DemoMemory` is registered on SQLite and, when ``NIGHTOWL_TEST_PG_URL`` is set, on
PostgreSQL (a fresh schema per test, the shared ``pg_schema_url`` fixture). Stores are
filled with the hashing embedder (`HashingEmbedder`, a deterministic fake): the suite
checks the contract (ordering, bounds, exclusions, upserts, replacement, deletion,
atomicity), not the quality of a language model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nightowl.errors import StoreError
from nightowl.ledger import Ledger
from nightowl.memory import (
    DemoMemory,
    DemoStore,
    EpisodeDemo,
    HashingEmbedder,
    MemorySettings,
    StepRecord,
)

COOK = (
    "cook a meal: slice the yellow potato, fry it and eat the meal",
    [
        ("You are in a kitchen. You see a fridge and a counter.", "open fridge"),
        ("You open the fridge, revealing a yellow potato.", "take yellow potato from fridge"),
        ("You take the yellow potato from the fridge.", "take knife from counter"),
        ("You take the knife from the counter.", "slice yellow potato with knife"),
        ("You slice the yellow potato.", "cook yellow potato with stove"),
        ("You fried the yellow potato.", "prepare meal"),
        ("Adding the meal to your inventory.", "eat meal"),
    ],
)
COIN = (
    "find the coin: explore the rooms and take the coin",
    [
        ("You are in the hallway. There is a door to the north.", "go north"),
        ("You are in the bedroom. An exit leads west.", "go west"),
        ("You are in the garden. You see a shiny coin on the grass.", "take coin"),
    ],
)
KEY = (
    "unlock the chest with the key and take the treasure",
    [
        ("You are in the attic. A small key lies next to an old chest.", "take small key"),
        ("You pick up the small key.", "unlock chest with small key"),
        ("The chest is unlocked.", "open chest"),
        ("The chest opens and reveals a golden treasure.", "take treasure"),
    ],
)


@dataclass
class Harness:
    """A store under test and how to make episodes it accepts."""

    store: DemoStore
    new_episode: Callable[[str], str]  # task id -> a fresh episode id of ``run_id``
    run_id: str
    new_run: Callable[[], str]
    #: False: every window holds one step (a chat demo's), whatever ``window``/``k_steps``
    multi_step_windows: bool = True


def needs_multi_step_windows(h: Harness) -> None:
    """Skip a test of windows of several steps for a store that keeps one step per demo."""
    if not h.multi_step_windows:
        pytest.skip("this store's demos are one step each (no windows of several steps)")


def steps_of(pairs: list[tuple[str, str]]) -> list[StepRecord]:
    return [
        StepRecord(idx=i, observation=o, action=a, done=i == len(pairs) - 1)
        for i, (o, a) in enumerate(pairs)
    ]


def _demo_memory(db: Any, tmp_path: Path) -> Harness:
    ledger = Ledger(db)
    run = ledger.start_run("conformance", "collect", {})
    store = DemoMemory(
        db, HashingEmbedder(), tmp_path / "indexes", MemorySettings(save_interval_s=0.0)
    )
    current = {"run": run}

    def new_episode(task_id: str) -> str:
        return ledger.start_episode(current["run"], task_id, "tw", "train")

    def new_run() -> str:
        current["run"] = ledger.start_run("conformance-2", "collect", {})
        return current["run"]

    return Harness(store=store, new_episode=new_episode, run_id=run, new_run=new_run)


def _chat_tenant(db: Any) -> Harness:
    """One tenant's chat demos; another tenant's demo is stored too (never returned)."""
    from nightowl.chat import TenantDemoStore

    ledger = Ledger(db)
    run = ledger.start_run("conformance", "chat", {})
    other = TenantDemoStore(db, HashingEmbedder(), "globex", min_score=-1.0)
    other.add_episode(ledger.start_episode(run, "cook-9", "chat"), COOK[0], steps_of(COOK[1]))
    store = TenantDemoStore(db, HashingEmbedder(), "acme", min_score=-1.0)
    current = {"run": ledger.start_run("conformance-1", "chat", {})}

    def new_run() -> str:
        current["run"] = ledger.start_run("conformance-2", "chat", {})
        return current["run"]

    return Harness(
        store=store,
        new_episode=lambda task_id: ledger.start_episode(current["run"], task_id, "chat"),
        run_id=current["run"],
        new_run=new_run,
        multi_step_windows=False,
    )


def _postgres_db(request: pytest.FixtureRequest) -> Any:
    from nightowl.storage import open_db

    return open_db(url=request.getfixturevalue("pg_schema_url"))


#: name -> factory(request, tmp_path); add another store here to hold it to the contract
STORES: dict[str, Callable[[pytest.FixtureRequest, Path], Harness]] = {
    "demo-memory-sqlite": lambda request, tmp_path: _demo_memory(
        request.getfixturevalue("sqlite_db"), tmp_path
    ),
    "demo-memory-postgresql": lambda request, tmp_path: _demo_memory(
        _postgres_db(request), tmp_path
    ),
    "chat-tenant-sqlite": lambda request, tmp_path: _chat_tenant(
        request.getfixturevalue("sqlite_db")
    ),
    "chat-tenant-postgresql": lambda request, tmp_path: _chat_tenant(_postgres_db(request)),
}
_MARKS = {
    "demo-memory-postgresql": [pytest.mark.postgres],
    "chat-tenant-postgresql": [pytest.mark.postgres],
}


@pytest.fixture(
    params=[pytest.param(name, marks=_MARKS.get(name, [])) for name in STORES],
)
def h(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    harness = STORES[request.param](request, tmp_path)
    try:
        yield harness
    finally:
        harness.store.close()


def add(h: Harness, task_id: str, demo: tuple[str, list[tuple[str, str]]]) -> str:
    ep = h.new_episode(task_id)
    h.store.add_episode(ep, demo[0], steps_of(demo[1]))
    return ep


@pytest.fixture
def filled(h: Harness) -> Harness:
    for task_id, demo in (("cook-1", COOK), ("coin-1", COIN), ("key-1", KEY)):
        add(h, task_id, demo)
    return h


def test_is_a_demo_store(h: Harness) -> None:
    assert isinstance(h.store, DemoStore)


def test_empty_store_returns_no_windows(h: Harness) -> None:
    assert h.store.retrieve("cook a meal", "You are in a kitchen.") == []


def test_best_episode_and_step_come_first(filled: Harness) -> None:
    needs_multi_step_windows(filled)
    obs = COOK[1][1][0]
    wins = filled.store.retrieve(COOK[0], obs, k_episodes=1, k_steps=1, window=1)
    assert len(wins) == 1
    w = wins[0]
    assert (w.task_id, w.goal, w.rank) == ("cook-1", COOK[0], 0)
    assert w.hit_idxs == [1] and w.best_idx == 1
    assert [s.idx for s in w.steps] == [0, 1, 2]
    assert [s.action for s in w.steps] == [a for _, a in COOK[1][:3]]
    assert all(s.id is not None for s in w.steps)


def test_bounds_order_and_clipping(filled: Harness) -> None:
    needs_multi_step_windows(filled)
    store = filled.store
    wins = store.retrieve(COOK[0], COOK[1][3][0], k_episodes=3, k_steps=1, window=0)
    assert wins[0].task_id == "cook-1"
    assert {w.task_id for w in wins} == {"cook-1", "coin-1", "key-1"}
    assert all(len(w.steps) == 1 for w in wins)
    assert [w.rank for w in wins] == sorted(w.rank for w in wins)
    wins = store.retrieve(COOK[0], COOK[1][3][0], k_episodes=2, k_steps=1, window=50)
    assert len({w.episode_id for w in wins}) == 2
    assert [s.idx for s in wins[0].steps] == list(range(len(COOK[1])))
    assert store.retrieve(COOK[0], "x", k_episodes=0) == []


def test_windows_are_contiguous_and_disjoint(filled: Harness) -> None:
    wins = filled.store.retrieve(COOK[0], "You take the knife", k_episodes=1, k_steps=3, window=2)
    idxs = [s.idx for w in wins for s in w.steps]
    assert len(idxs) == len(set(idxs))
    for w in wins:
        assert [s.idx for s in w.steps] == list(range(w.start_idx, w.end_idx + 1))
        assert set(w.hit_idxs) <= {s.idx for s in w.steps}
        assert w.best_idx in w.hit_idxs  # the window's best-scored hit


def test_same_query_same_answer(filled: Harness) -> None:
    args = (COIN[0], "You are in the garden.", [("You are in the hallway.", "go north")])
    first = filled.store.retrieve(*args, k_episodes=3)
    assert first == filled.store.retrieve(*args, k_episodes=3)


def test_exclusions(filled: Harness) -> None:
    store = filled.store
    wins = store.retrieve(COOK[0], "kitchen", k_episodes=1, exclude_task_ids=("cook-1",))
    assert wins and all(w.task_id != "cook-1" for w in wins)
    every = {w.episode_id for w in store.retrieve(COOK[0], "x", k_episodes=10)}
    assert len(every) == 3
    assert store.retrieve(COOK[0], "x", k_episodes=10, exclude_episode_ids=every) == []


def test_returned_steps_are_copies(filled: Harness) -> None:
    wins = filled.store.retrieve(COIN[0], COIN[1][2][0], k_episodes=1)
    wins[0].steps[0].action = "mutated"
    again = filled.store.retrieve(COIN[0], COIN[1][2][0], k_episodes=1)
    assert again[0].steps[0].action != "mutated"


def test_record_steps_upserts_and_reads_back_in_order(h: Harness) -> None:
    ep = h.new_episode("audit-1")
    recs = [
        StepRecord(idx=1, observation="b", action="go west", actor="student", reward=0.5),
        StepRecord(idx=0, observation="a", action="go north", actor="teacher"),
    ]
    ids = h.store.record_steps(ep, recs)
    assert len(ids) == 2 and len(set(ids)) == 2
    again = h.store.record_steps(ep, [{"idx": 1, "observation": "b2", "action": "go east"}])
    assert again == [ids[0]]  # same row, updated in place
    got = h.store.episode_steps(ep)
    assert [(s.idx, s.observation, s.action) for s in got] == [
        (0, "a", "go north"),
        (1, "b2", "go east"),
    ]
    assert [s.id for s in got] == [ids[1], ids[0]]
    assert h.store.episode_steps(h.new_episode("empty")) == []


def test_recorded_steps_are_not_demos_until_added(h: Harness) -> None:
    ep = h.new_episode("cook-1")
    h.store.record_steps(ep, steps_of(COOK[1]))
    assert h.store.retrieve(COOK[0], COOK[1][0][0]) == []
    h.store.add_episode(ep, COOK[0], h.store.episode_steps(ep))
    assert len(h.store.episode_steps(ep)) == len(COOK[1])  # steps reused, not duplicated
    assert h.store.retrieve(COOK[0], COOK[1][0][0])[0].episode_id == ep


def test_readding_replaces_the_demo(h: Harness) -> None:
    needs_multi_step_windows(h)
    ep = add(h, "coin-1", COIN)
    first = h.store.retrieve(COIN[0], COIN[1][0][0], k_episodes=5)
    assert [w.episode_id for w in first] == [ep]
    demo_id = first[0].demo_id
    assert h.store.add_episode(ep, COIN[0], steps_of(COIN[1][:2])) == demo_id
    wins = h.store.retrieve(COIN[0], COIN[1][0][0], k_episodes=5, window=10)
    assert len(wins) == 1 and [s.idx for s in wins[0].steps] == [0, 1]


def test_bad_batches_store_nothing(h: Harness) -> None:
    good = EpisodeDemo(episode_id=h.new_episode("coin-1"), goal=COIN[0], steps=steps_of(COIN[1]))
    ghost = EpisodeDemo(episode_id="no-such-episode", goal=KEY[0], steps=steps_of(KEY[1]))
    with pytest.raises(StoreError):
        h.store.add_episodes([good, ghost])
    assert h.store.retrieve(COIN[0], COIN[1][0][0]) == []
    assert h.store.episode_steps(good.episode_id) == []
    twice = steps_of(COIN[1]) + [StepRecord(idx=0, observation="o", action="a")]
    with pytest.raises(ValueError):
        h.store.add_episode(good.episode_id, COIN[0], twice)
    with pytest.raises(ValueError):
        h.store.add_episodes([good, good])
    assert h.store.add_episodes([]) == []


def test_delete_episode_and_run(filled: Harness) -> None:
    store = filled.store
    other = filled.new_run()
    extra = add(filled, "extra-1", KEY)
    cook = store.retrieve(COOK[0], "kitchen", k_episodes=1)[0].episode_id
    assert store.delete_episode(cook) is True
    assert store.delete_episode(cook) is False
    assert all(w.task_id != "cook-1" for w in store.retrieve(COOK[0], "kitchen", k_episodes=10))
    assert len(store.episode_steps(cook)) == len(COOK[1])  # the audit record stays
    assert store.delete_run(filled.run_id) == 2
    left = store.retrieve(KEY[0], KEY[1][0][0], k_episodes=10)
    assert {w.episode_id for w in left} == {extra}
    assert store.delete_run(other) == 1
    assert store.retrieve(KEY[0], KEY[1][0][0]) == []
    assert store.delete_run("no-such-run") == 0


def test_context_manager_closes(h: Harness) -> None:
    with h.store as store:
        assert store is h.store
