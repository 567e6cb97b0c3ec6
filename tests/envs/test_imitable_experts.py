"""Imitable experts: they win, read only what a player sees, and replay exactly.

TextWorld (cooking, coin_collector, treasure_hunter) and ALFWorld (marker
``alfworld``; skipped without the extra). "Never reads privileged state": the game's
engine is wrapped so that every state the environment sees holds only the public
keys (feedback, valid actions, won/lost, score), the walkthrough is stripped from the
game files, and for ALFWorld the handcoded expert and the planner raise if built.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.env_suite import REPO

TW_PUBLIC = ("feedback", "admissible_commands", "objective", "won", "lost", "score", "max_score")
ALF_PUBLIC = ("feedback", "admissible_commands", "won", "lost")


class PublicOnly:
    """A game whose reset/step return states holding only ``keys``."""

    def __init__(self, game: Any, keys: tuple[str, ...]) -> None:
        self.game, self.keys = game, keys

    def _public(self, state: Any) -> Any:
        from textworld.core import GameState

        return GameState({k: state[k] for k in self.keys if k in state})

    def reset(self) -> Any:
        return self._public(self.game.reset())

    def step(self, command: str) -> Any:
        state, reward, done = self.game.step(command)
        return self._public(state), reward, done

    def close(self) -> None:
        self.game.close()


def play(
    env: Any, task_id: str, max_steps: int = 50, first: tuple[str, ...] = ()
) -> tuple[bool, list[str]]:
    """Play ``first`` (the agent's own moves), then the expert until done."""
    env.reset(task_id)
    actions: list[str] = []
    res = None
    for a in first:
        res = env.step(a)
        actions.append(a)
    for _ in range(max_steps - len(actions)):
        a = env.expert_action()
        if a is None:
            break
        res = env.step(a)
        actions.append(a)
        if res.done:
            break
    return bool(res and res.won), actions


# ----------------------------------------------------------------------------- registry
def test_env_name_options_reach_the_constructor():
    from nightowl.envs.registry import env_class, is_installed, make_env, split_env_spec
    from nightowl.errors import UnknownNameError

    assert split_env_spec("tw") == ("tw", {})
    assert split_env_spec("tw:expert=imitable,max_steps=30") == (
        "tw", {"expert": "imitable", "max_steps": 30})
    assert env_class("tw:expert=imitable").name == "tw"
    assert is_installed("tw:expert=imitable")
    env = make_env("tw:expert=imitable,max_steps=30")
    assert (env.expert, env.max_steps) == ("imitable", 30)  # type: ignore[attr-defined]
    assert make_env("tw:expert=imitable", expert="policy").expert == "policy"  # type: ignore[attr-defined]
    with pytest.raises(UnknownNameError):
        split_env_spec("tw:expert")
    with pytest.raises(UnknownNameError):
        make_env("tw:expert=oracle-with-a-map")


# ----------------------------------------------------------------------------- TextWorld
@pytest.fixture(scope="module")
def tw(tw_cache_dir):
    from nightowl.envs.textworld import TextWorldEnv

    env = TextWorldEnv(cache_dir=tw_cache_dir, expert="imitable")
    yield env
    env.close()


def test_parse_recipe_and_goal_route():
    from nightowl.envs.imitable_textworld import instructed_moves, parse_recipe

    r = parse_recipe("Ingredients:\norange bell pepper\n\nDirections:\nfry the orange bell "
                     "pepper\n  prepare meal\n")
    assert r is not None and r.ingredients == ("orange bell pepper",)
    assert r.directions == (("fry", "orange bell pepper"),)
    assert parse_recipe("You see a fridge.") is None
    assert instructed_moves("First stop, head west. Then travel north. Lift the coin.") == [
        "west", "north"]


@pytest.mark.parametrize("task", ["tw/cooking/train/0", "tw/cooking/train/1",
                                  "tw/cooking/dev/10000"])
def test_imitable_cooking_wins_and_reads_the_cookbook_first_in_the_kitchen(tw, task):
    won, actions = play(tw, task)
    assert won, actions
    assert actions[-2:] == ["prepare meal", "eat meal"]
    book = actions.index("examine cookbook")
    assert not any(a.startswith("take ") for a in actions[:book])  # the recipe decides


def test_cooking_note_follows_the_recipe():
    """The cooking plan line: cookbook unread, what to take, what to do, the meal."""
    from nightowl.envs.imitable_textworld import cooking_note

    first = "-= Kitchen =-\nYou are in a kitchen. There is an exit to the north."
    assert cooking_note(first, []) == "Cookbook: not read yet (here, in the kitchen)."
    trace = [("examine cookbook", "Ingredients:\n  red apple\n\nDirections:\n  slice the "
                                  "red apple\n  prepare meal\n")]
    assert cooking_note(first, trace) == "Cookbook read; still to take: red apple."
    trace.append(("take red apple from counter", "You take the red apple from the counter."))
    assert cooking_note(first, trace) == ("Cookbook read; every ingredient taken; still to do: "
                                          "slice red apple with knife (take the knife first).")
    trace.append(("take knife from counter", "You take the knife from the counter."))
    assert cooking_note(first, trace).endswith("still to do: slice red apple with knife.")
    trace.append(("slice red apple with knife", "You slice the red apple."))
    assert cooking_note(first, trace) == (
        "Cookbook read; everything done. Next: prepare meal, in the kitchen.")
    trace.append(("prepare meal", "Adding the meal to your inventory."))
    assert cooking_note(first, trace).endswith("Next: eat meal.")
    hall = "-= Corridor =-\nYou are in a corridor. There is an exit to the east and the west."
    assert cooking_note(hall, []) == ("Cookbook: not read yet; looking for the kitchen. Exits "
                                      "not taken from here: east, west.")


def test_tw_plan_notes_end_cooking_observations_and_leave_the_expert_alone(tw_cache_dir):
    """With ``notes="plan"`` every cooking observation ends with the plan; the expert wins."""
    from nightowl.envs.registry import make_env

    env = make_env("tw:expert=imitable,notes=plan", cache_dir=tw_cache_dir)
    try:
        obs = env.reset("tw/cooking/train/0")
        assert obs.text.splitlines()[-1].startswith("Cookbook: not read yet")
        assert obs.info["notes"] == "plan"
        won, actions = play(env, "tw/cooking/train/0")
    finally:
        env.close()
    assert won, actions
    assert actions[-2:] == ["prepare meal", "eat meal"]


@pytest.mark.parametrize("task", ["tw/coin_collector/train/0", "tw/treasure_hunter/train/0"])
def test_imitable_route_follows_the_goal_and_recovers(tw, task):
    from nightowl.envs.imitable_textworld import OPPOSITE

    won, actions = play(tw, task)
    assert won, actions
    assert actions == play(tw, task)[1]
    # one step off the route: the expert walks back, then wins
    tw.reset(task)
    res = tw.step(actions[0])
    wrong = next((a for a in res.valid_actions if a.startswith("go ") and a != actions[1]), None)
    if wrong is None:
        pytest.skip("no wrong exit on this route")
    won, after = play(tw, task, first=(actions[0], wrong))
    assert won, after
    assert after[2] == f"go {OPPOSITE[wrong[3:]]}"


def test_imitable_cooking_recovers_after_wandering(tw):
    task = "tw/cooking/train/1"
    obs = tw.reset(task)
    moves = tuple(a for a in obs.valid_actions if a.startswith("go "))[:1]
    won, actions = play(tw, task, first=(*moves, "look", "inventory"))
    assert won, actions


def test_imitable_tw_is_deterministic(tw_cache_dir):
    from nightowl.envs.textworld import TextWorldEnv

    a = TextWorldEnv(cache_dir=tw_cache_dir, expert="imitable")
    b = TextWorldEnv(cache_dir=tw_cache_dir, expert="imitable")
    try:
        for task in ("tw/cooking/train/1", "tw/cooking/dev/10000"):
            assert play(a, task) == play(b, task) == play(a, task)
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("native", [False, True])
def test_imitable_tw_continues_the_same_after_restore(tw_cache_dir, native):
    from nightowl.envs.textworld import TextWorldEnv

    env = TextWorldEnv(cache_dir=tw_cache_dir, expert="imitable", native_snapshots=native)
    try:
        env.reset("tw/cooking/train/1")
        for _ in range(3):
            env.step(env.expert_action())
        snap = env.snapshot()

        def finish() -> list[str]:
            out = []
            while (a := env.expert_action()) is not None:
                out.append(a)
                if env.step(a).done:
                    break
            return out

        first = finish()
        env.restore(snap)
        assert finish() == first and env.episode.won
    finally:
        env.close()


def test_imitable_tw_never_reads_privileged_state(tw, tw_cache_dir, tmp_path):
    """The game files lose their walkthrough, the engine's states their private keys."""
    from nightowl.envs.textworld import TextWorldEnv

    task = "tw/cooking/train/1"
    src = tw.game_file(task)
    shutil.copy(src, tmp_path / src.name)
    data = json.loads(src.with_suffix(".json").read_text())
    for key in ("walkthrough", "recipe", "ingredients"):
        data["metadata"].pop(key, None)
    (tmp_path / src.with_suffix(".json").name).write_text(json.dumps(data))
    env = TextWorldEnv(cache_dir=tmp_path, expert="imitable")
    try:
        obs = env.reset(task)
        assert obs.info["expert"] == "imitable"
        env._tw = PublicOnly(env._tw, TW_PUBLIC)
        assert "policy_commands" not in env._state
        won, actions = play(env, task)
        assert won, actions
        assert set(env._state) <= set(TW_PUBLIC)
        assert (won, actions) == play(tw, task)  # same as on the full game
    finally:
        env.close()


def test_imitable_tw_refuses_games_without_one(tw):
    from nightowl.errors import EnvError

    with pytest.raises(EnvError, match="no imitable expert"):
        tw.reset("tw/simple/train/0")


# ----------------------------------------------------------------------------- ALFWorld
ALF_FAST = ["pick", "look"]
ALF_SLOW = ["clean", "heat", "cool", "pick2"]


def _alf_cache() -> Path:
    return Path(os.environ.get("NIGHTOWL_TEST_ALFWORLD_CACHE", REPO / ".nightowl/cache/alfworld"))


@pytest.fixture(scope="module")
def alf():
    pytest.importorskip("alfworld", reason="needs the alfworld extra (make test-envs)")
    from nightowl.envs.alfworld import AlfWorldEnv

    env = AlfWorldEnv(cache_dir=_alf_cache(), expert="imitable")
    yield env
    env.close()


def test_parse_alfworld_goals():
    from nightowl.envs.imitable_alfworld import Goal, parse_goal

    assert parse_goal("put a hot mug in countertop") == Goal(kind="heat", obj="mug",
                                                             target="countertop")
    assert parse_goal("Your task is to: find two pen and put them in dresser.") == Goal(
        kind="pick2", obj="pen", target="dresser")
    assert parse_goal("examine the book with the desklamp").kind == "look"  # type: ignore[union-attr]
    assert parse_goal("put some soapbar on toilet").kind == "pick"  # type: ignore[union-attr]
    assert parse_goal("clean some apple and put it in fridge").kind == "clean"  # type: ignore[union-attr]
    assert parse_goal("dance") is None


def _apple_expert() -> Any:
    """An imitable ALFWorld expert whose statistics know only apples."""
    from nightowl.envs.imitable_alfworld import ImitableAlfredExpert, SearchStats

    return ImitableAlfredExpert(SearchStats(
        rates={"apple": {"fridge": 0.5, "cabinet": 0.3, "countertop": 0.4}},
        openable=frozenset({"cabinet", "fridge"})))


def test_imitable_alfworld_policy_on_a_synthetic_trace():
    """Search order from the statistics, open on arrival, shared spots, put back."""
    expert = _apple_expert()
    first = ("You are in the middle of a room. Looking quickly around you, you see a "
             "cabinet 2, a cabinet 1, a countertop 1, and a fridge 1.\n\nYour task is to: "
             "put a cool apple in countertop.")
    goal = "put a cool apple in countertop"
    go = {f"go to {r}" for r in ("cabinet 1", "cabinet 2", "countertop 1", "fridge 1")}
    trace: list[tuple[str, str]] = []

    def next_action(*extra: str, here: str = "") -> str | None:
        return expert.act(goal, first, trace, sorted((go - {f"go to {here}"}) | set(extra)))

    # fridge (0.5 / 2 steps) before cabinets (0.3 / 2); the goal's countertop last
    assert next_action() == "go to fridge 1"
    trace.append(("go to fridge 1", "You arrive at fridge 1. The fridge 1 is closed."))
    assert next_action("open fridge 1", here="fridge 1") == "open fridge 1"
    trace.append(("open fridge 1", "You open the fridge 1. The fridge 1 is open. In it, you "
                                   "see nothing."))
    assert next_action(here="fridge 1") == "go to cabinet 1"
    trace.append(("go to cabinet 1", "You arrive at cabinet 1. The cabinet 1 is closed."))
    trace.append(("open cabinet 1", "You open the cabinet 1. The cabinet 1 is open. In it, "
                                    "you see a towel 1."))
    # cabinet 2 shares cabinet 1's spot: no "go to", but "open" reaches it
    assert next_action("open cabinet 2", here="cabinet 2") == "open cabinet 2"
    trace.append(("open cabinet 2", "You open the cabinet 2. The cabinet 2 is open. In it, "
                                    "you see a apple 3."))
    assert next_action("take apple 3 from cabinet 2", here="cabinet 2") == (
        "take apple 3 from cabinet 2")
    trace.append(("take apple 3 from cabinet 2", "You pick up the apple 3 from the cabinet 2."))
    assert next_action(here="cabinet 2") == "go to fridge 1"
    trace.append(("go to fridge 1", "You arrive at fridge 1. The fridge 1 is open. In it, you "
                                    "see nothing."))
    assert next_action("cool apple 3 with fridge 1", here="fridge 1") == (
        "cool apple 3 with fridge 1")
    trace.append(("cool apple 3 with fridge 1", "You cool the apple 3 using the fridge 1."))
    assert next_action(here="fridge 1") == "go to countertop 1"
    # an agent that took a towel instead puts it back where it was
    towel = [("go to cabinet 1", "You arrive at cabinet 1. The cabinet 1 is open. In it, you "
                                 "see a towel 1."),
             ("take towel 1 from cabinet 1", "You pick up the towel 1 from the cabinet 1."),
             ("go to fridge 1", "You arrive at fridge 1. The fridge 1 is open. In it, you see "
                                "nothing.")]
    valid = sorted(go - {"go to fridge 1"})
    assert expert.act(goal, first, towel, valid) == "go to cabinet 1"


def test_imitable_alfworld_notes_name_what_the_expert_searches_next():
    """The search notes follow the expert: a seen object, else the learned order.

    The goal's own receptacle is not searched (as the expert skips it).
    """
    from nightowl.envs.alfworld_notes import search_note

    expert = _apple_expert()
    first = ("You are in the middle of a room. Looking quickly around you, you see a "
             "cabinet 1, a countertop 1, and a fridge 1.\n\nYour task is to: "
             "put a apple in countertop.")
    goal = "put a apple in countertop"
    assert search_note(expert, goal, first, []) == (
        "Not searched yet for a apple, likeliest first: fridge 1, cabinet 1.")  # goal's last
    assert search_note(expert, goal, first, [], shown=1) == (
        "Not searched yet for a apple, likeliest first: fridge 1.")
    trace = [("go to fridge 1", "You arrive at fridge 1. The fridge 1 is open. In it, you see "
                                "nothing.")]
    assert search_note(expert, goal, first, trace).endswith("first: cabinet 1.")
    trace.append(("go to cabinet 1", "You arrive at cabinet 1. The cabinet 1 is open. In it, "
                                     "you see a apple 2."))
    assert search_note(expert, goal, first, trace) == "Seen: apple 2 in cabinet 1."
    trace.append(("take apple 2 from cabinet 1", "You pick up the apple 2 from the cabinet 1."))
    assert search_note(expert, goal, first, trace) == ""  # found: nothing left to search
    assert search_note(expert, "dance a jig", first, []) == ""


def test_imitable_alfworld_plan_notes_say_what_the_expert_does_next():
    """The plan notes follow every phase: search, a closed receptacle here, the tool, the goal.

    Each line names what the expert's next action needs, from the episode's text only.
    """
    from nightowl.envs.alfworld_notes import plan_note

    expert = _apple_expert()
    first = ("You are in the middle of a room. Looking quickly around you, you see a "
             "cabinet 1, a countertop 1, a fridge 1, and a microwave 1.\n\nYour task is to: "
             "heat some apple and put it in countertop.")
    goal = "heat some apple and put it in countertop"
    valid = ["go to cabinet 1", "go to countertop 1", "go to fridge 1", "go to microwave 1"]

    def both(trace: list[tuple[str, str]]) -> tuple[str, str | None]:
        return plan_note(expert, goal, first, trace), expert.act(goal, first, trace, valid)

    note, act = both([])
    assert note == ("Looking for a apple; not searched yet, likeliest first: fridge 1, "
                    "cabinet 1, microwave 1. Next: go to fridge 1.")
    assert act == "go to fridge 1"
    trace = [("go to fridge 1", "You arrive at fridge 1. The fridge 1 is closed.")]
    assert plan_note(expert, goal, first, trace) == (
        "Looking for a apple: fridge 1 (here, closed) is not searched yet. Next: open it.")
    assert expert.act(goal, first, trace, [*valid, "open fridge 1"]) == "open fridge 1"
    trace.append(("open fridge 1", "You open the fridge 1. The fridge 1 is open. In it, you "
                                   "see a apple 2."))
    assert plan_note(expert, goal, first, trace) == (
        "Looking for a apple: apple 2 is in fridge 1 (here). Next: take it.")
    trace.append(("take apple 2 from fridge 1", "You pick up the apple 2 from the fridge 1."))
    note, act = both(trace)
    assert note == "Holding apple 2. Next: go to microwave 1 and heat it with microwave 1."
    assert act == "go to microwave 1"
    trace.append(("go to microwave 1", "You arrive at microwave 1. The microwave 1 is closed."))
    assert plan_note(expert, goal, first, trace) == (
        "Holding apple 2. Next: heat it with microwave 1 (here, closed).")
    trace.append(("heat apple 2 with microwave 1", "You heat the apple 2 using the microwave 1."))
    assert plan_note(expert, goal, first, trace) == (
        "Holding apple 2, heated. Next: go to countertop 1 and move it to countertop 1.")
    trace.append(("go to countertop 1", "You arrive at countertop 1. On the countertop 1, you "
                                        "see nothing."))
    assert plan_note(expert, goal, first, trace) == (
        "Holding apple 2, heated. Next: move it to countertop 1 (here).")
    assert plan_note(expert, "dance a jig", first, []) == ""
    # seen elsewhere; a closed goal receptacle; something the task does not need
    pick = "put a apple in cabinet"
    seen = [("go to fridge 1", "You arrive at fridge 1. The fridge 1 is open. In it, you see "
                               "a apple 2, and a egg 1."),
            ("go to countertop 1", "You arrive at countertop 1. On the countertop 1, you see "
                                   "nothing.")]
    assert plan_note(expert, pick, first, seen) == (
        "Looking for a apple: apple 2 is in fridge 1. Next: go to fridge 1 and take it.")
    egg = seen[:1] + [("take egg 1 from fridge 1", "You pick up the egg 1 from the fridge 1."),
                      ("go to cabinet 1", "You arrive at cabinet 1. The cabinet 1 is closed.")]
    assert plan_note(expert, pick, first, egg) == (
        "Holding egg 1, which the task does not need. Next: move it to cabinet 1 (here, "
        "closed), or back to fridge 1.")
    held = seen[:1] + [("take apple 2 from fridge 1", "You pick up the apple 2 from the fridge 1."),
                       ("go to cabinet 1", "You arrive at cabinet 1. The cabinet 1 is closed.")]
    assert plan_note(expert, pick, first, held) == (
        "Holding apple 2. Next: open cabinet 1 (here, closed), then move it to cabinet 1.")
    assert expert.act(pick, first, held, ["open cabinet 1", "go to fridge 1"]) == "open cabinet 1"


@pytest.mark.alfworld
@pytest.mark.parametrize(
    "game", ALF_FAST + [pytest.param(t, marks=pytest.mark.slow) for t in ALF_SLOW]
)
def test_imitable_alfworld_wins_generated_games(alf, game):
    for seed in (0, 1):
        won, actions = play(alf, f"alfworld/{game}/train/{seed}")
        assert won, (game, seed, actions)


@pytest.mark.alfworld
def test_imitable_alfworld_is_deterministic_and_recovers(alf):
    task = "alfworld/look/train/1"
    first = play(alf, task)
    assert first[0] and play(alf, task) == first
    obs = alf.reset(task)
    detour = ("inventory", sorted(a for a in obs.valid_actions if a.startswith("go to "))[-1])
    won, actions = play(alf, task, first=detour)
    assert won, actions


@pytest.mark.alfworld
def test_imitable_alfworld_never_reads_privileged_state(monkeypatch, tmp_path):
    """No traj_data.json, no walkthrough, no expert wrapper, no facts: it still wins."""
    pytest.importorskip("alfworld", reason="needs the alfworld extra (make test-envs)")
    import alfworld.agents.environment.alfred_tw_env as tw_env
    import alfworld.agents.expert.handcoded_expert as handcoded

    from nightowl.envs import alfworld_gen
    from nightowl.envs.alfworld import AlfWorldEnv
    from nightowl.envs.imitable_alfworld import ImitableAlfredExpert, train_stats

    # the games as the generator keeps them (generating one runs the experts to check
    # it is solvable: done before the experts are refused, as a warm cache would have)
    sources = {
        task: alfworld_gen.generate(_alf_cache() / "games", *task.split("/")[1:3],
                                    int(task.split("/")[3]))
        for task in ("alfworld/pick/train/2", "alfworld/heat/train/1")
    }

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a privileged expert was built")

    monkeypatch.setattr(handcoded.HandCodedAgent, "__init__", refuse)
    monkeypatch.setattr(tw_env.AlfredExpert, "__init__", refuse)
    splits: set[str] = set()
    real_build = alfworld_gen.build_problem

    def build(task: str, split: str, seed: int, attempt: int = 0) -> Any:
        splits.add(split)
        return real_build(task, split, seed, attempt)

    monkeypatch.setattr(alfworld_gen, "build_problem", build)
    stats = train_stats(None, seeds=40)  # learned here, from train games only
    assert splits == {"train"} and stats.rates["mug"]
    for task, src in sources.items():
        _, game, split, seed = task.split("/")
        dst = alfworld_gen.game_dir(tmp_path / "games", game, split, int(seed))
        dst.mkdir(parents=True)
        data = json.loads(src.read_text())
        data["walkthrough"], data["solvable"] = None, False
        (dst / "game.tw-pddl").write_text(json.dumps(data))  # and no traj_data.json
    real_start = alfworld_gen.start_game

    def start_public(gamefile: Any, **kwargs: Any) -> PublicOnly:
        assert kwargs.get("expert") is None  # no expert wrapper, no facts requested
        return PublicOnly(real_start(gamefile, **kwargs), ALF_PUBLIC)

    monkeypatch.setattr(alfworld_gen, "start_game", start_public)
    env = AlfWorldEnv(cache_dir=tmp_path, expert="imitable")
    env._imitable = ImitableAlfredExpert(stats)
    try:
        for task in ("alfworld/pick/train/2", "alfworld/heat/train/1"):
            obs = env.reset(task)
            assert obs.info["expert"] == "imitable"
            won, actions = play(env, task)
            assert won, (task, actions)
            assert set(env._state) <= set(ALF_PUBLIC)
    finally:
        env.close()
