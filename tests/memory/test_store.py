"""DemoMemory on real SQL and real FAISS with the hashing fake embedder."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text

from nightowl.errors import StoreError
from nightowl.memory import DemoMemory, StepRecord
from nightowl.memory.schema import DemoRow, DemoStepRow, StepRow

from .conftest import COIN, COOKING, KEY, steps_of


def test_empty_memory_returns_nothing(make_mem):
    mem = make_mem()
    assert mem.retrieve("cook a meal", "You are in a kitchen.") == []
    assert len(mem) == 0
    st = mem.stats()
    assert st.demos == 0 and all(v["rows"] == 0 for v in st.indexes.values())


def test_retrieve_finds_matching_episode_and_step(filled: DemoMemory):
    obs = "You open the fridge, revealing a yellow potato."
    wins = filled.retrieve(COOKING[0], obs, k_episodes=1, k_steps=1, window=1)
    assert len(wins) == 1
    w = wins[0]
    assert w.task_id == "cook-1" and w.goal == COOKING[0] and w.rank == 0
    assert w.hit_idxs == [1]
    assert [s.idx for s in w.steps] == [0, 1, 2]
    assert w.steps[1].action == "take yellow potato from fridge"
    assert w.steps[1].id is not None
    assert w.episode_score > 0.99  # same goal text


def test_k_and_window_bounds(filled: DemoMemory):
    wins = filled.retrieve(COOKING[0], COOKING[1][3][0], k_episodes=3, k_steps=1, window=0)
    assert [w.task_id for w in wins][0] == "cook-1"
    assert {w.task_id for w in wins} == {"cook-1", "coin-1", "key-1"}
    assert all(len(w.steps) == 1 for w in wins)
    ranks = [w.rank for w in wins]
    assert ranks == sorted(ranks)
    wins = filled.retrieve(COOKING[0], COOKING[1][3][0], k_episodes=2, k_steps=1, window=5)
    assert len({w.episode_id for w in wins}) == 2
    assert len(wins[0].steps) == len(COOKING[1])  # window clipped to the episode


def test_overlapping_windows_are_merged(filled: DemoMemory):
    wins = filled.retrieve(COOKING[0], "You take the knife", k_episodes=1, k_steps=3, window=2)
    idxs = [s.idx for w in wins for s in w.steps]
    assert len(idxs) == len(set(idxs)), "a step appears twice"
    for w in wins:
        assert [s.idx for s in w.steps] == list(range(w.start_idx, w.end_idx + 1))


def test_exclude_task_ids_and_episode_ids(filled: DemoMemory):
    wins = filled.retrieve(COOKING[0], "kitchen", k_episodes=1, exclude_task_ids=("cook-1",))
    assert wins and all(w.task_id != "cook-1" for w in wins)
    all_eps = {w.episode_id for w in filled.retrieve(COOKING[0], "x", k_episodes=10)}
    wins = filled.retrieve(COOKING[0], "x", k_episodes=10, exclude_episode_ids=all_eps)
    assert wins == []


def test_duplicate_demos_are_deduplicated(make_mem, add_demo):
    mem = make_mem()
    add_demo(mem, "cook-1", *COOKING)
    add_demo(mem, "cook-1", *COOKING)  # collected twice
    add_demo(mem, "coin-1", *COIN)
    wins = mem.retrieve(COOKING[0], COOKING[1][0][0], k_episodes=2, k_steps=1, window=1)
    # the duplicate is dropped and the next best episode takes its place
    assert [(w.task_id, w.rank) for w in wins] == [("cook-1", 0), ("coin-1", 1)]


def test_returned_steps_are_copies(filled: DemoMemory):
    wins = filled.retrieve(COIN[0], "garden", k_episodes=1)
    wins[0].steps[0].action = "mutated"
    again = filled.retrieve(COIN[0], "garden", k_episodes=1)
    assert again[0].steps[0].action != "mutated"


def test_ordering_is_stable(filled: DemoMemory):
    args = (COIN[0], "You are in the garden.", [("You are in the hallway.", "go north")])
    a = [w.model_dump() for w in filled.retrieve(*args, k_episodes=3)]
    b = [w.model_dump() for w in filled.retrieve(*args, k_episodes=3)]
    assert a == b and a[0]["task_id"] == "coin-1"


def test_history_key_prefers_matching_progress(make_mem, add_demo):
    # Two demos of the same goal with identical observations but different progress.
    mem = make_mem(w_obs=0.0, w_hist=1.0)
    pairs = [
        ("You are in a corridor.", "go north"),
        ("You are in a corridor.", "go east"),
        ("You are in a corridor.", "take coin"),
    ]
    add_demo(mem, "maze-1", "walk the maze and take the coin", pairs)
    wins = mem.retrieve(
        "walk the maze and take the coin",
        "You are in a corridor.",
        [("You are in a corridor.", "go north"), ("You are in a corridor.", "go east")],
        k_episodes=1,
        k_steps=1,
        window=0,
    )
    assert wins[0].hit_idxs == [2]


def test_add_episode_accepts_dicts_and_reuses_recorded_steps(make_mem, ledger, run_id, db):
    mem = make_mem()
    ep = ledger.start_episode(run_id, "key-1", "tw", "train")
    ids = mem.record_steps(ep, steps_of(KEY[1]))
    again = mem.record_steps(ep, steps_of(KEY[1]))  # idempotent upsert
    assert ids == again
    rows = [
        {
            "idx": s.idx,
            "observation": s.observation,
            "action": s.action,
            "actor": "oracle",
            "step_id": 99,
        }
        for s in steps_of(KEY[1])[2:]
    ]
    demo_id = mem.add_episode(ep, KEY[0], rows, source="escalation")
    assert demo_id > 0
    with db.session() as s:
        assert s.scalar(select(func.count(StepRow.id)).where(StepRow.episode_id == ep)) == 4
        assert s.scalar(select(func.count(DemoStepRow.step_id))) == 2
    wins = mem.retrieve(KEY[0], "The chest opens", k_episodes=1, k_steps=1, window=5)
    assert [s.idx for s in wins[0].steps] == [2, 3]  # only the demo's steps
    assert wins[0].source == "escalation"
    assert [s.actor for s in mem.episode_steps(ep)] == ["teacher", "teacher", "oracle", "oracle"]


def test_readding_an_episode_replaces_its_demo(make_mem, ledger, run_id):
    mem = make_mem()
    ep = ledger.start_episode(run_id, "coin-1", "tw", "train")
    mem.add_episode(ep, COIN[0], steps_of(COIN[1]))
    mem.add_episode(ep, COIN[0], steps_of(COIN[1][:2]))
    st = mem.stats()
    assert st.demos == 1 and st.demo_steps == 2
    assert st.indexes["obs"]["rows"] == 2 and st.indexes["goal"]["rows"] == 1


def test_unknown_episode_is_an_error_and_stores_nothing(make_mem, db):
    mem = make_mem()
    with pytest.raises(StoreError):
        mem.add_episode("0" * 32, "goal", steps_of(COIN[1]))
    with db.session() as s:
        assert s.scalar(select(func.count(StepRow.id))) == 0
    assert mem.retrieve("goal", "obs") == []


def test_delete_run_removes_only_that_runs_demos(make_mem, add_demo, ledger, db):
    mem = make_mem()
    other = ledger.start_run("other", "collect", {})
    add_demo(mem, "cook-1", *COOKING)
    add_demo(mem, "coin-1", *COIN, run=other)
    assert mem.delete_run(other) == 1
    assert {w.task_id for w in mem.retrieve(COIN[0], COIN[1][0][0], k_episodes=5)} == {"cook-1"}
    with db.session() as s:  # the run's steps stay for audit
        assert s.scalar(select(func.count(StepRow.id))) == len(COOKING[1]) + len(COIN[1])
    # deleting the run itself in the ledger cascades to steps and demos
    ledger.delete_run(other)
    with db.session() as s:
        assert s.scalar(select(func.count(StepRow.id))) == len(COOKING[1])
    assert mem.delete_run("f" * 32) == 0


def test_ledger_run_deletion_cascades_and_memory_catches_up(make_mem, add_demo, ledger, run_id):
    mem = make_mem(refresh_interval_s=0.0)
    other = ledger.start_run("other", "collect", {})
    add_demo(mem, "cook-1", *COOKING)
    add_demo(mem, "coin-1", *COIN, run=other)
    ledger.delete_run(other)  # behind the memory's back
    assert mem.refresh() is True
    assert {w.task_id for w in mem.retrieve(COIN[0], "garden", k_episodes=5)} == {"cook-1"}
    assert mem.stats().indexes["obs"]["rows"] == len(COOKING[1])


def test_reopen_loads_saved_indexes(filled: DemoMemory, make_mem):
    before = filled.retrieve(KEY[0], KEY[1][1][0])
    filled.close()
    mem = make_mem()
    assert mem.last_open_report == {"goal": "loaded", "obs": "loaded", "hist": "loaded"}
    assert [w.model_dump() for w in mem.retrieve(KEY[0], KEY[1][1][0])] == [
        w.model_dump() for w in before
    ]


def test_step_records_round_trip(make_mem, ledger, run_id):
    mem = make_mem()
    ep = ledger.start_episode(run_id, "t", "tw", "test")
    st = StepRecord(
        idx=0,
        observation="o",
        action="a",
        reasoning="because",
        reward=1.5,
        score=0.5,
        done=True,
        actor="student",
        valid_actions=["a", "b"],
        meta={"samples": 3},
    )
    mem.record_step(ep, st)
    back = mem.episode_steps(ep)[0]
    assert back.model_dump(exclude={"id"}) == st.model_dump(exclude={"id"})


def test_sql_tables_created_by_migration(db):
    with db.engine.connect() as conn:
        for table in ("steps", "demos", "demo_steps"):
            conn.execute(text(f"SELECT COUNT(*) FROM {table}"))
    assert any("0002_memory" in r for r in db.current_revisions())


def test_demo_rows_keep_vectors_and_text_hashes(filled: DemoMemory, db):
    with db.session() as s:
        demo = s.scalars(select(DemoRow)).first()
        assert demo is not None and len(demo.goal_vec or b"") == 384 * 4
        assert demo.embed_model == "hashing-fake-384" and len(demo.goal_sha) == 40


def test_add_episodes_batch_and_all_or_nothing(make_mem, ledger, run_id, db):
    from nightowl.memory import EpisodeDemo

    mem = make_mem()
    eps = [ledger.start_episode(run_id, t, "tw", "train") for t in ("cook-1", "coin-1")]
    batch = [
        EpisodeDemo(episode_id=eps[0], goal=COOKING[0], steps=steps_of(COOKING[1])),
        EpisodeDemo(episode_id=eps[1], goal=COIN[0], steps=steps_of(COIN[1]), task_id="coin-x"),
    ]
    ids = mem.add_episodes(batch)
    assert len(ids) == 2 and len(mem) == 2
    assert mem.retrieve(COIN[0], "garden", k_episodes=1)[0].task_id == "coin-x"
    bad = [EpisodeDemo(episode_id="e" * 32, goal="g", steps=steps_of(KEY[1]))]
    with pytest.raises(StoreError):
        mem.add_episodes(bad)
    with pytest.raises(ValueError):
        mem.add_episodes([batch[0], batch[0]])
    with db.session() as s:
        assert s.scalar(select(func.count(DemoRow.id))) == 2


def test_step_cache_sees_rewritten_steps(make_mem, ledger, run_id):
    mem = make_mem()
    ep = ledger.start_episode(run_id, "coin-1", "tw", "train")
    mem.add_episode(ep, COIN[0], steps_of(COIN[1]))
    assert mem.retrieve(COIN[0], "garden", k_episodes=1)[0].steps
    changed = steps_of(COIN[1])
    changed[2] = changed[2].model_copy(update={"action": "pick up coin"})
    mem.record_steps(ep, changed)
    acts = [s.action for s in mem.retrieve(COIN[0], "garden", k_episodes=1, window=5)[0].steps]
    assert "pick up coin" in acts


def test_concurrent_threads_retrieve_while_adding(make_mem, ledger, run_id):
    import threading

    mem = make_mem(refresh_interval_s=0.0)
    eps = [ledger.start_episode(run_id, f"t{i}", "tw", "train") for i in range(12)]
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                for w in mem.retrieve(COOKING[0], "kitchen fridge", k_episodes=3):
                    assert w.steps and w.goal
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for t in readers:
        t.start()
    try:
        for i, ep in enumerate(eps):
            goal, pairs = (COOKING, COIN, KEY)[i % 3]
            mem.add_episode(ep, f"{goal} #{i}", steps_of(pairs))
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert not errors, errors[0]
    st = mem.stats()
    assert st.demos == 12 and st.indexes["goal"]["rows"] == 12
