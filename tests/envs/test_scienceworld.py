"""ScienceWorld adapter: catalogue (its own splits), gold-path expert on and off the path."""

import pytest

from nightowl.envs.registry import make_env
from nightowl.envs.scienceworld import GAMES, VARIATIONS, split_range
from nightowl.errors import UnknownNameError

# Tasks whose gold paths are short, so the default test run stays quick.
LIFESPAN = "sciworld/lifespan-longest-lived/test/93"
ANIMAL = "sciworld/find-animal/test/225"


@pytest.fixture(scope="module")
def env():
    e = make_env("sciworld", max_steps=60)
    yield e
    e.close()


def play_expert(env, task_id, prefix=()):
    env.reset(task_id)
    res = None
    for action in prefix:
        res = env.step(action)
    while res is None or not res.done:
        action = env.expert_action()
        if action is None:
            return res, False
        res = env.step(action)
    return res, True


def test_catalogue_is_sciworlds_own_split(env):
    assert len(GAMES) == 30
    assert split_range("boil", "train") == range(0, 14)
    assert split_range("boil", "dev") == range(14, 21)
    assert split_range("boil", "test") == range(21, 30)
    total = sum(len(env.tasks(s)) for s in ("train", "dev", "test"))
    assert total == sum(n for _, _, n in VARIATIONS.values())
    assert env.tasks("test", game="boil")[0].task_id == "sciworld/boil/test/21"
    with pytest.raises(UnknownNameError, match="21-29"):
        env.reset("sciworld/boil/test/3")
    with pytest.raises(UnknownNameError, match="boil"):
        env.reset("sciworld/cook-pasta/test/3")


def test_split_table_matches_the_engine(env):
    server = env._sim.server
    for task in ("boil", "find-animal"):
        server.load(task, 0, "", False)
        assert list(server.getVariationsTrain()) == list(split_range(task, "train"))
        assert list(server.getVariationsDev()) == list(split_range(task, "dev"))
        assert list(server.getVariationsTest()) == list(split_range(task, "test"))


@pytest.mark.parametrize("task_id", [LIFESPAN, ANIMAL])
def test_expert_wins(env, task_id):
    res, finished = play_expert(env, task_id)
    assert finished and res.won and res.score == 100


def test_expert_resumes_after_harmless_deviation(env):
    res, finished = play_expert(env, ANIMAL, prefix=("look around", "xyzzy", "inventory"))
    assert finished and res.won
    assert env.replans >= 1


def test_expert_none_after_unrecoverable_deviation(env):
    env.reset(ANIMAL)
    gold = env.gold_actions
    assert gold[:2] == ("open door to hallway", "go to hallway")
    env.step(gold[0])
    env.step(gold[1])
    start_room = env.reset(ANIMAL).text.split("called the ")[1].split(".")[0]
    env.step(gold[0])
    env.step(gold[1])
    env.step(f"go to {start_room}")  # walked back: resuming the gold path cannot win
    failures = env.replan_failures
    assert env.expert_action() is None
    assert env.replan_failures == failures + 1


def test_failed_task_ends_episode_and_expert_has_nothing(env):
    obs = env.reset(LIFESPAN)
    res = env.step("focus on agent")  # focusing on the wrong thing fails the task
    assert res.done and not res.won and res.info["failed"]
    assert env.expert_action() is None
    assert obs.valid_actions and "focus on agent" in obs.valid_actions


GARBAGE = ["", "x" * 10_000, "' OR 1=1; --", "ünïcödé ☃ 🦉", "\n\t\r", "focus on", "0"]


def test_garbage_actions_survive(env):
    env.reset(LIFESPAN)
    for junk in GARBAGE:
        res = env.step(junk)
        assert res.invalid and not res.done and res.text
    res, finished = play_expert(env, LIFESPAN, prefix=("xyzzy",))
    assert finished and res.won


def test_snapshot_restore_by_replay(env):
    env.reset(ANIMAL)
    for action in env.gold_actions[:3]:
        env.step(action)
    snap = env.snapshot()
    expected = env.step(env.gold_actions[3])
    env.step("look around")
    env.restore(snap)
    assert env.actions == snap.actions
    again = env.step(env.gold_actions[3])
    assert (again.text, again.score, again.valid_actions) == (
        expected.text,
        expected.score,
        expected.valid_actions,
    )


def test_gold_path_is_kept_across_restarts_of_a_task(env):
    env.reset(ANIMAL)
    gold = env.gold_actions
    env.reset(ANIMAL)
    assert env.gold_actions == gold
