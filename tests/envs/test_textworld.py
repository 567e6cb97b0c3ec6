"""TextWorld adapter: generation cache, policy-command expert, native snapshots, garbage."""

import os

import pytest

from nightowl.envs.registry import make_env
from nightowl.envs.textworld import GAMES, challenge_settings, game_path
from nightowl.errors import UnknownNameError

# Few, small games: generation costs seconds each (cached across runs).
TASKS = ["tw/coin_collector/test/20000", "tw/treasure_hunter/test/20000", "tw/cooking/test/20000"]


@pytest.fixture(scope="module")
def env(tw_cache_dir):
    e = make_env("tw", cache_dir=tw_cache_dir, max_steps=30)
    yield e
    e.close()


def play_expert(env, task_id, first=None):
    env.reset(task_id)
    res = env.step(first) if first else None
    while res is None or not res.done:
        action = env.expert_action()
        if action is None:
            return res, False
        res = env.step(action)
    return res, True


def test_catalogue(env):
    assert env.games == GAMES
    test = env.tasks("test", game="cooking")
    assert test[0].task_id == "tw/cooking/test/20000" and len(test) == 1000
    assert test[0].params["recipe"] == 1 and test[0].params["go"] == 6
    assert challenge_settings("cooking", test[0].params, "dev")["split"] == "valid"
    with pytest.raises(UnknownNameError, match="coin_collector"):
        env.reset("tw/zork/test/20000")
    with pytest.raises(UnknownNameError, match="0-999"):
        env.reset("tw/cooking/train/5000")


@pytest.mark.parametrize("task_id", TASKS)
def test_expert_wins(env, task_id):
    res, finished = play_expert(env, task_id)
    assert finished and res.won and res.score == res.info["max_score"]


def test_game_files_are_cached_by_params_and_seed(env, tw_cache_dir):
    path = env.game_file(TASKS[0])
    assert path.parent == tw_cache_dir and path.suffix == ".z8"
    assert path.with_suffix(".json").is_file()
    mtime = os.path.getmtime(path)
    assert env.game_file(TASKS[0]) == path and os.path.getmtime(path) == mtime
    other = game_path(tw_cache_dir, "coin_collector", {"level": 6}, 20000)
    assert other != path


def test_expert_is_state_aware_off_path(env):
    obs = env.reset("tw/treasure_hunter/test/20000")
    first = env.expert_action()
    detour = next(a for a in obs.valid_actions if a.startswith("go ") and a != first)
    res, finished = play_expert(env, obs.task_id, first=detour)
    assert finished and res.won


def test_expert_none_when_game_is_lost_or_over(env):
    res, _ = play_expert(env, TASKS[1])
    assert res.done and env.expert_action() is None


GARBAGE = ["", "x" * 10_000, "' OR 1=1; --", "ünïcödé ☃ 🦉", "\n\t\r", "take", "go nowhere " * 40]


def test_garbage_actions_survive(env):
    env.reset(TASKS[0])
    for junk in GARBAGE:
        res = env.step(junk)
        assert res.invalid and not res.done and res.text
    res, finished = play_expert(env, TASKS[0], first="xyzzy")
    assert finished and res.won


def test_replay_snapshot_by_default(env):
    env.reset(TASKS[0])
    env.step(env.expert_action())
    snap = env.snapshot()
    assert snap.native is None and len(snap.actions) == 1
    expected = env.step(env.expert_action())
    env.restore(snap)
    assert env.step(env.expert_action()).text == expected.text


def test_native_snapshot_restore(tw_cache_dir):
    env = make_env("tw", cache_dir=tw_cache_dir, native_snapshots=True)
    env.reset(TASKS[2])
    env.step(env.expert_action())
    snap = env.snapshot()
    assert snap.native is not None
    expected = env.step(env.expert_action())
    env.step("look")
    for _ in range(2):  # a snapshot can be restored more than once
        env.restore(snap)
        assert env.actions == snap.actions
        again = env.step(env.expert_action())
        assert (again.text, again.score, again.valid_actions) == (
            expected.text,
            expected.score,
            expected.valid_actions,
        )
    # and a replay-only snapshot (no native part) lands in the same state
    env.restore(type(snap)(task_id=snap.task_id, actions=snap.actions))
    assert env.step(env.expert_action()).text == expected.text


def reset_in_threads(task_ids, **env_kw) -> list[BaseException]:
    """Reset each task in its own thread with its own env; the errors raised."""
    import threading

    errors: list[BaseException] = []

    def reset(task_id: str) -> None:
        env = make_env("tw", **env_kw)
        try:
            env.reset(task_id)
        except BaseException as exc:  # noqa: BLE001 - collected for the assert
            errors.append(exc)
        finally:
            env.close()

    threads = [threading.Thread(target=reset, args=(t,)) for t in task_ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_games_start_concurrently_in_threads():
    """textworld's parser is module-global: concurrent starts must not corrupt it."""
    assert reset_in_threads([f"tw/coin_collector/train/{i}" for i in range(3)]) == []


def test_cold_cache_games_generate_and_start_concurrently(tmp_path):
    """Generation and start share textworld's parser; one lock must cover both.

    With a lock for each, two episodes on a cold cache (one thread starting the game it
    had just generated while the other generated its own) both failed at reset with
    "pop from empty list": `nightowl run --env tw --concurrency 2` lost every episode.
    """
    tasks = [f"tw/treasure_hunter/test/{20000 + i}" for i in range(2)]
    assert reset_in_threads(tasks, cache_dir=tmp_path) == []
