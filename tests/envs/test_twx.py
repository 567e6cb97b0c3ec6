"""TextWorld-Express adapter: catalogue, expert wins, off-path expert, garbage actions."""

import pytest

from nightowl.envs.registry import make_env
from nightowl.envs.twx import GAMES
from nightowl.errors import EnvError, UnknownNameError


@pytest.fixture(scope="module")
def env():
    e = make_env("twx", max_steps=40)
    yield e
    e.close()


def play_expert(env, task_id, first=None):
    obs = env.reset(task_id)
    res = env.step(first) if first else None
    while res is None or not res.done:
        action = env.expert_action()
        if action is None:
            return obs, res, False
        res = env.step(action)
    return obs, res, True


def test_catalogue_splits_and_ids(env):
    test = env.tasks("test", game="coin")
    assert len(test) == 1000 and test[0].task_id == "twx/coin/test/20000"
    assert env.tasks("train", game="coin")[0].seed == 0
    assert env.tasks("dev", game="coin")[-1].seed == 10999
    assert len(env.tasks("train")) == 1000 * len(GAMES)
    assert test[0].params["numLocations"] == 4


def test_unknown_task_ids_list_what_exists(env):
    with pytest.raises(UnknownNameError, match="cookingworld"):
        env.reset("twx/nogame/test/20000")
    with pytest.raises(UnknownNameError, match="20000-20999"):
        env.reset("twx/coin/test/5")
    with pytest.raises(UnknownNameError):
        env.reset("tw/coin/test/20000")


@pytest.mark.parametrize("game", GAMES)
def test_expert_wins_every_game(env, game):
    for seed in (20000, 20001):
        obs, res, finished = play_expert(env, f"twx/{game}/test/{seed}")
        assert obs.goal and obs.text and obs.valid_actions
        assert finished and res.won and res.score == pytest.approx(1.0)


@pytest.mark.parametrize(
    "task_id,wrong",
    [
        ("twx/cookingworld/test/20000", "move east"),
        ("twx/coin/test/20001", "move north"),
        ("twx/twc/test/20001", "move north"),
        ("twx/sorting/test/20001", "take 18ml of aluminum"),
    ],
)
def test_expert_recovers_from_off_path_states(env, task_id, wrong):
    obs = env.reset(task_id)
    assert wrong in obs.valid_actions and wrong != env.gold_actions[0]
    before = env.replans
    _, res, finished = play_expert(env, task_id, first=wrong)
    assert env.replans > before  # it had to re-plan, not just follow the gold path
    assert finished and res.won


def test_expert_returns_none_when_no_bounded_plan_exists(env):
    # Taking a wrong item in arithmetic cannot be undone into a gold-path state within
    # the search bound: the documented rule is "no expert from this state".
    env.reset("twx/arithmetic/test/20000")
    env.step("take 14 cabbages")
    assert env.expert_action() is None
    assert env.replan_failures >= 1


def test_tiny_search_bound_gives_none():
    # Same deviation the default expert recovers from (see above), with no search allowed.
    env = make_env("twx", expert_search_depth=0)
    env.reset("twx/cookingworld/test/20000")
    env.step("move east")
    assert env.expert_action() is None


GARBAGE = ["", "x" * 10_000, "' OR 1=1; --", "ünïcödé ☃ 🦉", "\n\t\r", "take", "go north " * 50]


def test_garbage_actions_survive(env):
    obs = env.reset("twx/cookingworld/test/20002")
    for junk in GARBAGE:
        res = env.step(junk)
        assert res.invalid and not res.done and res.text
    assert env.episode.invalid_actions == len(GARBAGE)
    # the episode still works, and the expert still wins from here
    _, res, finished = play_expert(env, obs.task_id, first="xyzzy")
    assert finished and res.won


def test_step_limit_and_after_end(env):
    small = make_env("twx", max_steps=3)
    small.reset("twx/coin/test/20000")
    results = [small.step("look around") for _ in range(3)]
    assert results[-1].done and not results[-1].won and results[-1].info["truncated"]
    after = small.step("look around")
    assert after.done and after.invalid


def test_snapshot_restore_by_replay(env):
    env.reset("twx/cookingworld/test/20001")
    for _ in range(4):
        env.step(env.expert_action())
    snap = env.snapshot()
    expected = env.step(env.expert_action())
    env.step("move west")
    env.restore(snap)
    assert env.actions == snap.actions
    again = env.step(env.expert_action())
    assert (again.text, again.score, again.valid_actions) == (
        expected.text,
        expected.score,
        expected.valid_actions,
    )


def test_instances_share_one_jvm_without_interference():
    a, b = make_env("twx"), make_env("twx")
    a.reset("twx/sorting/test/20001")
    a.step("take 18ml of aluminum")
    b.reset("twx/sorting/test/20001")  # generating on the shared JVM must not corrupt `a`
    a.step("take 3ml of brass")
    a.step("put 3ml of brass in box")
    res = a.step("put 18ml of aluminum in box")
    assert not res.invalid and "box" in res.text


def test_bad_params_are_a_clear_error():
    env = make_env("twx", game_params={"coin": {"bogus": 1}})
    with pytest.raises(EnvError, match="Known properties"):
        env.reset("twx/coin/test/20000")
    with pytest.raises(UnknownNameError):
        make_env("twx", games=["chess"])
