"""The shipped all-MiniLM-L6-v2 (loaded once per session) and retrieval quality with it."""

from __future__ import annotations

import numpy as np
import pytest

from nightowl.memory import DemoMemory, MemorySettings, SentenceTransformerEmbedder

from .conftest import COIN, COOKING, KEY, steps_of


@pytest.fixture(scope="session")
def minilm() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder()


def test_minilm_shape_norm_and_bf16_quality(minilm):
    texts = [COOKING[0], COIN[0], COOKING[1][0][0], "You take the knife from the counter."]
    v = minilm.embed(texts)
    assert v.shape == (4, 384) and v.dtype == np.float32 and minilm.dim == 384
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    assert minilm.embed([]).shape == (0, 384)
    ref = SentenceTransformerEmbedder(dtype="float32").embed(texts)
    bf16 = SentenceTransformerEmbedder(dtype="bfloat16").embed(texts)
    cos = np.sum(ref * bf16, axis=1)
    assert cos.min() > 0.99, cos  # bf16 keeps the fp32 geometry


def test_dtype_follows_the_cpu_unless_overridden(monkeypatch):
    from nightowl.memory import embedder as emb

    monkeypatch.delenv("NIGHTOWL_EMBEDDER_DTYPE", raising=False)
    flags = open("/proc/cpuinfo").read()
    native = "amx_bf16" in flags or "avx512_bf16" in flags
    dtype, why = emb.choose_dtype()
    assert dtype == ("bfloat16" if native else "float32"), why
    monkeypatch.setattr(emb, "cpu_has_native_bf16", lambda: (True, "scripted"))
    assert emb.choose_dtype() == ("bfloat16", "scripted")
    assert emb.choose_dtype("float32") == ("float32", "requested")
    monkeypatch.setenv("NIGHTOWL_EMBEDDER_DTYPE", "float32")
    assert emb.choose_dtype() == ("float32", "requested")
    assert emb.choose_dtype("auto")[0] == "float32"


def test_cooking_demo_for_cooking_goal_not_coin(sqlite_db, tmp_path, minilm):
    from nightowl.ledger import Ledger

    led = Ledger(sqlite_db)
    run = led.start_run("collect", "collect", {})
    mem = DemoMemory(sqlite_db, minilm, tmp_path / "idx", MemorySettings())
    for task_id, (goal, pairs) in {"cook-1": COOKING, "coin-1": COIN, "key-1": KEY}.items():
        mem.add_episode(led.start_episode(run, task_id, "tw", "train"), goal, steps_of(pairs))
    wins = mem.retrieve(
        "prepare a meal: chop the red carrot, roast it, then eat it",
        "You are in the kitchen. The fridge is closed. A knife lies on the counter.",
        k_episodes=1,
        k_steps=1,
        window=1,
    )
    assert wins[0].task_id == "cook-1"
    assert wins[0].hit_idxs == [0]
    wins = mem.retrieve(
        "look for a gold coin somewhere in the house", "You are in a hallway.", k_episodes=1
    )
    assert wins[0].task_id == "coin-1"
    wins = mem.retrieve("open the locked box with a key", "You see a key and a box.", k_episodes=1)
    assert wins[0].task_id == "key-1"


#: two AppWorld templates whose variants share a value ('Standup notes')
_TEMPLATED = {
    "note-append/0": "In my Simple Note 'Groceries', add the line 'butter' at the end.",
    "note-append/1": "In my Simple Note 'Trip ideas', add the line 'Oslo' at the end.",
    "note-rename/0": "Change the title of my Simple Note 'Standup notes' to 'Daily standup'; "
    "keep its content as it is.",
    "spotify-like/0": "On Spotify, give the song 'Neon Rain' a like.",
    "spotify-remove/0": "Take the song 'Sea Glass' out of my Spotify playlist 'Chill'.",
}


@pytest.mark.parametrize(
    ("query", "masked", "kept"),
    [
        (
            "In my Simple Note 'Standup notes', add the line 'fix the flaky test' at the end.",
            "note-append",
            "note-rename",
        ),
        ("On Spotify, give the song 'Sea Glass' a like.", "spotify-like", "spotify-remove"),
    ],
)
def test_masked_goal_values_find_the_same_template(
    minilm, make_mem, add_demo, query, masked, kept
):
    """A shared quoted value pulls the kept goal to another template; masked, it does not.

    Switching ``goal_values`` on a filled memory re-embeds its goals at open.
    """
    pairs = [("Task started.", "apis.supervisor.complete_task()")]
    mem = make_mem(embedder=minilm)  # the default: mask
    for tid, goal in _TEMPLATED.items():
        add_demo(mem, tid, goal, pairs)
    for values, want in (("mask", masked), ("keep", kept), ("mask", masked)):
        if values != mem.settings.goal_values:
            mem.close()
            mem = make_mem(embedder=minilm, goal_values=values)
            assert mem.last_open_report["goal"].startswith("rebuilt")
        top = mem.retrieve(query, "Task started.", k_episodes=1)[0]
        assert top.task_id.split("/")[0] == want, (values, top.task_id)
        assert top.goal == _TEMPLATED[top.task_id]  # shown as written
    mem.close()
