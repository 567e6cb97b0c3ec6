"""Indexes are caches: missing, corrupt or stale ones are rebuilt from SQL."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from sqlalchemy import update

from nightowl.memory import HashingEmbedder
from nightowl.memory._index import index_paths
from nightowl.memory.schema import DemoRow, StepRow

from .conftest import COIN, COOKING, KEY


def _reopen_report(make_mem, **kw):
    mem = make_mem(**kw)
    return mem, mem.last_open_report


def test_truncated_index_file_is_rebuilt(filled, make_mem, tmp_path):
    want = [w.model_dump() for w in filled.retrieve(COOKING[0], "fridge")]
    filled.close()
    fpath, _ = index_paths(tmp_path / "indexes", "obs")
    fpath.write_bytes(fpath.read_bytes()[:100])
    mem, report = _reopen_report(make_mem)
    assert report["obs"].startswith("rebuilt") and "checksum" in report["obs"]
    assert report["goal"] == "loaded"
    assert [w.model_dump() for w in mem.retrieve(COOKING[0], "fridge")] == want
    # the repaired index was saved: the next open trusts it
    assert _reopen_report(make_mem)[1]["obs"] == "loaded"


def test_garbage_manifest_and_missing_manifest(filled, make_mem, tmp_path):
    filled.close()
    _, mpath = index_paths(tmp_path / "indexes", "goal")
    mpath.write_text("{not json")
    _, gpath = index_paths(tmp_path / "indexes", "hist")
    gpath.unlink()
    mem, report = _reopen_report(make_mem)
    assert "manifest unreadable" in report["goal"]
    assert "manifest missing" in report["hist"]
    assert mem.stats().indexes["goal"]["rows"] == 3
    assert mem.retrieve(KEY[0], "attic")[0].task_id == "key-1"


def test_index_file_replaced_with_valid_but_wrong_index(filled, make_mem, tmp_path):
    filled.close()
    d = tmp_path / "indexes"
    # swap the obs and hist files (valid FAISS files, wrong content): checksums catch it
    o, h = index_paths(d, "obs")[0], index_paths(d, "hist")[0]
    ob, hb = o.read_bytes(), h.read_bytes()
    o.write_bytes(hb)
    h.write_bytes(ob)
    _, report = _reopen_report(make_mem)
    assert report["obs"].startswith("rebuilt") and report["hist"].startswith("rebuilt")


def test_changed_row_is_reembedded(filled, make_mem, db):
    filled.close()
    new_obs = "A purple dragon guards the volcano entrance."
    with db.session() as s:
        s.execute(
            update(StepRow)
            .where(StepRow.idx == 0, StepRow.action == "go north")
            .values(observation=new_obs)
        )
    mem, report = _reopen_report(make_mem)
    assert report["obs"].startswith("rebuilt")
    wins = mem.retrieve(COIN[0], new_obs, k_episodes=1, k_steps=1, window=0)
    assert wins[0].steps[0].observation == new_obs and wins[0].hit_idxs == [0]


def test_changed_goal_is_reembedded(filled, make_mem, db):
    filled.close()
    with db.session() as s:
        s.execute(
            update(DemoRow)
            .where(DemoRow.task_id == "coin-1")
            .values(goal="bake a chocolate cake in the oven")
        )
    mem, report = _reopen_report(make_mem)
    assert report["goal"].startswith("rebuilt")
    assert mem.retrieve("bake a chocolate cake in the oven", "x", k_episodes=1)[0].task_id == (
        "coin-1"
    )


def test_other_embedding_model_triggers_reembedding(filled, make_mem, db):
    filled.close()
    mem, report = _reopen_report(make_mem, embedder=None)
    assert report["goal"] == "loaded"
    other = HashingEmbedder(dim=128)
    mem2 = make_mem(embedder=other)
    assert all(r.startswith("rebuilt") for r in mem2.last_open_report.values())
    assert mem2.retrieve(COOKING[0], "fridge")[0].task_id == "cook-1"
    with db.session() as s:
        assert {r.embed_model for r in s.query(DemoRow)} == {other.model_name}


def test_rows_added_elsewhere_are_caught_up(filled, make_mem, add_demo):
    filled.close()
    writer = make_mem(save_interval_s=3600.0)  # never saves its indexes
    add_demo(
        writer,
        "extra-1",
        "water the plants in the greenhouse",
        [("You are in the greenhouse.", "water plants")],
    )
    mem, report = _reopen_report(make_mem)
    assert report["goal"] == "caught up (+1)" and report["obs"] == "caught up (+1)"
    assert mem.retrieve("water the plants", "greenhouse", k_episodes=1)[0].task_id == "extra-1"


def test_flat_switches_to_hnsw_above_threshold(make_mem, add_demo, run_id):
    mem = make_mem(hnsw_threshold=8, step_hnsw_threshold=8)
    add_demo(mem, "cook-1", *COOKING)
    assert mem.stats().indexes["obs"]["type"] == "flat"
    add_demo(mem, "coin-1", *COIN)
    add_demo(mem, "key-1", *KEY)
    st = mem.stats()
    assert st.indexes["obs"]["type"] == "hnsw" and st.indexes["obs"]["rows"] == 14
    assert st.indexes["goal"]["type"] == "flat"
    assert mem.retrieve(KEY[0], KEY[1][2][0], k_episodes=1)[0].task_id == "key-1"
    # HNSW cannot delete: deleting rebuilds from SQL
    assert mem.delete_run(run_id) == 3
    assert mem.stats().indexes["obs"]["rows"] == 0
    assert mem.retrieve(KEY[0], "x") == []


def test_step_keys_stay_flat_by_default(make_mem, add_demo):
    # Retrieval reads step vectors by id only: the step keys need no HNSW graph.
    mem = make_mem(hnsw_threshold=2)
    for i, (goal, pairs) in enumerate([COOKING, COIN, KEY]):
        add_demo(mem, f"t{i}", goal, pairs)
    st = mem.stats()
    assert st.indexes["goal"]["type"] == "hnsw"
    assert st.indexes["obs"]["type"] == st.indexes["hist"]["type"] == "flat"
    assert st.indexes["obs"]["rows"] == 14


def test_hnsw_index_persists_and_reloads(make_mem, add_demo):
    mem = make_mem(hnsw_threshold=4, step_hnsw_threshold=4)
    for i, (goal, pairs) in enumerate([COOKING, COIN, KEY]):
        add_demo(mem, f"t{i}", goal, pairs)
    mem.close()
    again = make_mem(hnsw_threshold=4, step_hnsw_threshold=4)
    assert again.last_open_report["obs"] == "loaded"
    assert again.stats().indexes["obs"]["type"] == "hnsw"


def test_other_process_writes_are_seen(make_mem, add_demo, db, ledger, run_id, tmp_path):
    mem = make_mem(refresh_interval_s=0.0)
    add_demo(mem, "cook-1", *COOKING)
    ep = ledger.start_episode(run_id, "coin-1", "tw", "train")
    code = textwrap.dedent(f"""
        import json, sys
        from nightowl.storage import open_db
        from nightowl.memory import DemoMemory, HashingEmbedder, MemorySettings, StepRecord
        db = open_db(url={db.url!r})
        mem = DemoMemory(db, HashingEmbedder(), {str(tmp_path / "indexes")!r},
                         MemorySettings(save_interval_s=0))
        pairs = json.loads(sys.argv[1])
        mem.add_episode({ep!r}, {COIN[0]!r},
                        [StepRecord(idx=i, observation=o, action=a) for i, (o, a) in
                         enumerate(pairs)])
        mem.close()
    """)
    subprocess.run([sys.executable, "-c", code, json.dumps(COIN[1])], check=True, timeout=120)
    wins = mem.retrieve(COIN[0], COIN[1][2][0], k_episodes=1)
    assert wins and wins[0].task_id == "coin-1"
