"""A scripted environment that fails on purpose (control-logic tests only).

``ScriptedFailingEnv`` ("flaky" when a test registers it) has one game per failure
mode; the oracle expert always says "go" and wins on the third step:

* ``ok`` (three tasks): plays out;
* ``reset_exit``: every reset raises ``SystemExit`` (as Fast Downward does);
* ``reset_once``: the first reset of the task raises ``RuntimeError``, later ones work;
* ``step_raise``: every second step raises ``RuntimeError`` (from ``step`` itself);
* ``step_once``: the first second step of the task raises ``SystemExit``, later ones work.

The "once" counters are per process; `reset_counters` clears them between tests.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from nightowl.envs.base import Split, TaskSpec
from nightowl.envs.common import EngineStep, Episode, ReplayEnvironment

GAMES = ("ok", "reset_exit", "reset_once", "step_raise", "step_once")
_calls: Counter[str] = Counter()


def reset_counters() -> None:
    """Forget which "once" failures already happened."""
    _calls.clear()


class ScriptedFailingEnv(ReplayEnvironment):
    """A three-step game per failure mode (see the module docstring)."""

    name = "flaky"
    has_expert = True
    games = GAMES
    default_max_steps = 10

    def seeds(self, game: str, split: Split) -> list[int]:
        """Three ``ok`` tasks per split, one of each failure."""
        self._check_game(game)
        return [0, 1, 2] if game == "ok" else [0]

    def _start(self, spec: TaskSpec) -> tuple[str, str, tuple[str, ...] | None, dict[str, Any]]:
        _calls[f"reset:{spec.task_id}"] += 1
        if spec.game == "reset_exit":
            raise SystemExit(f"scripted: {spec.task_id} cannot start")
        if spec.game == "reset_once" and _calls[f"reset:{spec.task_id}"] == 1:
            raise RuntimeError("scripted: first reset fails")
        return "walk three times", "You are here.", ("go", "wait"), {}

    def step(self, action: str) -> Any:
        """Fail the second step where the game says so, else play."""
        spec = self.episode.spec
        if len(self.episode.actions) == 1:
            _calls[f"step:{spec.task_id}"] += 1
            if spec.game == "step_raise":
                raise RuntimeError("scripted: the engine crashed")
            if spec.game == "step_once" and _calls[f"step:{spec.task_id}"] == 1:
                raise SystemExit("scripted: the engine exited")
        return super().step(action)

    def _engine_step(self, action: str) -> EngineStep:
        n = len(self.episode.actions) + 1
        won = action == "go" and n >= 3
        return EngineStep(text=f"step {n}", score=float(won), done=won, won=won,
                          valid_actions=("go", "wait"))

    def _expert(self, episode: Episode) -> str | None:
        return "go"
