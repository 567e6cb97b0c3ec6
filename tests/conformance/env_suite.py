"""The environment conformance suite: what every adapter must do.

Call `check_environment(env, task_ids)` from any test (each adapter's own tests, or
`test_environments.py`, which runs it over every core adapter). It checks the protocol
of `nightowl.envs.base.Environment`:

- the catalogue is deterministic and its ids parse as ``<env>/<game>/<split>/<seed>``;
- `reset` returns the task id, a goal and an observation text (and valid actions as a
  tuple of strings when the environment knows them);
- `step` answers valid and garbage actions with a `StepResult` and feedback text, never
  an exception; garbage is flagged ``invalid``;
- the expert (where ``has_expert``) plays each task to a win;
- `snapshot`/`restore` (where ``can_snapshot``) return to an equivalent state, twice;
- stepping after the end does not raise; unknown task ids raise `UnknownNameError`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from nightowl.envs.base import SPLITS, Environment, Observation, StepResult
from nightowl.envs.registry import parse_task_id
from nightowl.errors import UnknownNameError

REPO = Path(__file__).resolve().parents[2]


def tw_test_cache_dir() -> Path:
    """Where tests keep generated TextWorld games between runs (generation takes seconds).

    ``<repo>/.nightowl/cache/textworld`` (git-ignored; keyed by settings, seed and
    TextWorld version), or ``$NIGHTOWL_TEST_TW_CACHE``.
    """
    default = REPO / ".nightowl" / "cache" / "textworld"
    return Path(os.environ.get("NIGHTOWL_TEST_TW_CACHE", default))


GARBAGE: tuple[str, ...] = (
    "",
    "x" * 10_000,
    "' OR 1=1; DROP TABLE steps; --",
    "ünïcödé ☃ 🦉 \u200b",
    "\n\t\r",
    "xyzzy plugh 42",
)


def check_environment(
    env: Environment,
    task_ids: Sequence[str],
    *,
    expert_max_steps: int = 100,
    garbage_is_invalid: bool = True,
) -> None:
    """Run every conformance check on ``env`` with ``task_ids`` (at least one)."""
    assert task_ids, "give at least one task id"
    check_catalogue(env)
    for task_id in task_ids:
        check_reset(env, task_id)
        check_garbage(env, task_id, garbage_is_invalid=garbage_is_invalid)
        if env.has_expert:
            check_expert_wins(env, task_id, max_steps=expert_max_steps)
            check_after_end(env)
        if env.can_snapshot:
            check_snapshot_restore(env, task_id)
    check_unknown_task(env)


def check_catalogue(env: Environment) -> None:
    """Deterministic catalogue; ids parse and name this environment."""
    total = 0
    for split in SPLITS:
        tasks = env.tasks(split)
        assert [t.task_id for t in tasks] == [t.task_id for t in env.tasks(split)]
        assert len({t.task_id for t in tasks}) == len(tasks), f"duplicate ids in {split}"
        for spec in tasks[:50]:
            name, game, sp, seed = parse_task_id(spec.task_id)
            assert (name, game, sp, seed) == (env.name, spec.game, split, spec.seed)
            assert spec.env == env.name and spec.split == split
        total += len(tasks)
    assert total > 0, "empty catalogue"
    test_ids = {t.task_id for t in env.tasks("test")}
    assert not test_ids & {t.task_id for t in env.tasks("train")}, "train and test overlap"


def check_reset(env: Environment, task_id: str) -> Observation:
    """Reset returns the task id, a goal and a text; one valid step works."""
    obs = env.reset(task_id)
    assert isinstance(obs, Observation) and obs.task_id == task_id
    assert isinstance(obs.goal, str) and obs.goal.strip(), "empty goal"
    assert isinstance(obs.text, str) and obs.text.strip(), "empty observation"
    if obs.valid_actions is not None:
        assert isinstance(obs.valid_actions, tuple) and obs.valid_actions
        assert all(isinstance(a, str) for a in obs.valid_actions)
    action = env.expert_action() if env.has_expert else None
    if action is None and obs.valid_actions:
        action = obs.valid_actions[0]
    if action is not None:
        res = env.step(action)
        _check_step_result(res)
        assert not res.invalid, f"valid action {action!r} flagged invalid: {res.text[:200]}"
    return obs


def check_garbage(env: Environment, task_id: str, *, garbage_is_invalid: bool = True) -> None:
    """Garbage actions get feedback, never an exception, and do not end the episode."""
    env.reset(task_id)
    for junk in GARBAGE:
        res = env.step(junk)
        _check_step_result(res)
        assert res.text.strip(), f"no feedback for {junk[:20]!r}"
        assert not res.won, f"garbage {junk[:20]!r} won the task"
        if garbage_is_invalid:
            assert res.invalid, f"garbage {junk[:20]!r} not flagged invalid"
    # non-str input (a model returning None, a number) is survived too
    _check_step_result(env.step(None))  # type: ignore[arg-type]


def check_expert_wins(env: Environment, task_id: str, *, max_steps: int = 100) -> None:
    """The expert plays the task from the start to a win."""
    env.reset(task_id)
    res = None
    for _ in range(max_steps):
        action = env.expert_action()
        assert action is not None, f"expert has no action on the gold path of {task_id}"
        res = env.step(action)
        if res.done:
            break
    assert res is not None and res.done and res.won, f"expert did not win {task_id}"


def check_after_end(env: Environment) -> None:
    """Once done, stepping again answers (done, no exception) and the expert is silent."""
    res = env.step("look")
    _check_step_result(res)
    assert res.done
    assert env.expert_action() is None


def check_snapshot_restore(env: Environment, task_id: str) -> None:
    """A restored snapshot behaves like the state it was taken in (restorable twice)."""
    obs = env.reset(task_id)
    first = (env.expert_action() if env.has_expert else None) or _some_action(obs)
    env.step(first)
    snap = env.snapshot()
    assert snap.task_id == task_id and list(snap.actions)[-1:] == [_norm(first)]
    nxt = (env.expert_action() if env.has_expert else None) or _some_action(obs)
    expected = env.step(nxt)
    env.step("xyzzy")
    for _ in range(2):
        env.restore(snap)
        got = env.step(nxt)
        assert (got.text, got.score, got.done, got.won, got.valid_actions) == (
            expected.text,
            expected.score,
            expected.done,
            expected.won,
            expected.valid_actions,
        ), "restore did not reproduce the snapshot's state"


def check_unknown_task(env: Environment) -> None:
    """Unknown ids raise UnknownNameError (a user mistake), not a crash."""
    for bad in (f"{env.name}/no-such-game/test/0", f"{env.name}/x", "no-such-env/g/test/1"):
        with pytest.raises(UnknownNameError):
            env.reset(bad)


def _check_step_result(res: StepResult) -> None:
    assert isinstance(res, StepResult)
    assert isinstance(res.text, str)
    assert isinstance(res.score, int | float) and isinstance(res.reward, int | float)
    assert isinstance(res.done, bool) and isinstance(res.won, bool)
    assert isinstance(res.invalid, bool)
    if res.valid_actions is not None:
        assert all(isinstance(a, str) for a in res.valid_actions)


def _some_action(obs: Observation) -> str:
    return obs.valid_actions[0] if obs.valid_actions else "look"


def _norm(action: str) -> str:
    return " ".join(action.split())
