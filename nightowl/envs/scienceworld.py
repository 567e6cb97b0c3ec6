"""ScienceWorld adapter (``sciworld``): its 30 tasks and their variations.

Task ids are ``sciworld/<task>/<split>/<variation>``; the splits are ScienceWorld's own
(``get_variations_train/dev/test``), which for every task are contiguous ranges:
train ``[0, n_train)``, dev ``[n_train, n_train + n_dev)``, test the rest. The table
below was read from the engine (scienceworld 1.2.3); a test checks it against the
engine. Tasks load with the ``easy`` simplifications by default.

One JVM per process (started on first use), shared by every instance; each instance
owns its own simulator object on it.

Expert: ScienceWorld's gold action sequence, generated lazily (on the first
`expert_action` call, on a private scratch simulator, so plain episodes do not pay for
it). While the episode is on the gold path the expert returns its next action. After a
deviation it tries, in order, to resume the gold path at the action it was due to take
next, then at the one after it (the deviation may have done that action's work), and
adopts a candidate only if replaying the episode plus the candidate on the scratch
simulator wins. Otherwise it returns None ("no expert from this state"). A bounded
search over valid actions, as TextWorld-Express does, is not affordable here: one
replay costs seconds.
"""

from __future__ import annotations

import time
from functools import cached_property
from typing import Any

from nightowl.envs._jvm import SharedJVM
from nightowl.envs.base import Split, TaskSpec
from nightowl.envs.common import EngineStep, Episode, ReplayEnvironment
from nightowl.errors import EnvError, MissingExtraError

try:
    from scienceworld.constants import BASEPATH, JAR_PATH
except ImportError as exc:  # core dependency, but say what is missing if it is
    raise MissingExtraError("ScienceWorld", "envs", "scienceworld") from exc

#: task -> (train variations, dev variations, all variations)
VARIATIONS: dict[str, tuple[int, int, int]] = {
    "boil": (14, 7, 30),
    "change-the-state-of-matter-of": (14, 7, 30),
    "chemistry-mix": (16, 8, 32),
    "chemistry-mix-paint-secondary-color": (18, 9, 36),
    "chemistry-mix-paint-tertiary-color": (18, 9, 36),
    "find-animal": (150, 75, 300),
    "find-living-thing": (150, 75, 300),
    "find-non-living-thing": (150, 75, 300),
    "find-plant": (150, 75, 300),
    "freeze": (14, 7, 30),
    "grow-fruit": (62, 31, 126),
    "grow-plant": (62, 31, 126),
    "identify-life-stages-1": (6, 3, 14),
    "identify-life-stages-2": (4, 2, 10),
    "inclined-plane-determine-angle": (84, 42, 168),
    "inclined-plane-friction-named-surfaces": (692, 346, 1386),
    "inclined-plane-friction-unnamed-surfaces": (80, 40, 162),
    "lifespan-longest-lived": (62, 31, 125),
    "lifespan-longest-lived-then-shortest-lived": (62, 31, 125),
    "lifespan-shortest-lived": (62, 31, 125),
    "measure-melting-point-known-substance": (218, 109, 436),
    "measure-melting-point-unknown-substance": (150, 75, 300),
    "melt": (14, 7, 30),
    "mendelian-genetics-known-plant": (60, 30, 120),
    "mendelian-genetics-unknown-plant": (240, 120, 480),
    "power-component": (10, 5, 20),
    "power-component-renewable-vs-nonrenewable-energy": (10, 5, 20),
    "test-conductivity": (450, 225, 900),
    "test-conductivity-of-unknown-substances": (300, 150, 600),
    "use-thermometer": (270, 135, 540),
}
GAMES: tuple[str, ...] = tuple(VARIATIONS)

NO_MATCH = "No known action matches that input."

JVM = SharedJVM("ScienceWorld", JAR_PATH, BASEPATH, ["-Xmx2g", "-XX:+UseSerialGC"])


def split_range(task: str, split: Split) -> range:
    """The variation numbers of ``task`` in ``split``."""
    n_train, n_dev, n_all = VARIATIONS[task]
    if split == "train":
        return range(0, n_train)
    if split == "dev":
        return range(n_train, n_train + n_dev)
    return range(n_train + n_dev, n_all)


class _Sim:
    """One ScienceWorld simulator object on the shared JVM."""

    def __init__(self) -> None:
        self.server = JVM.gateway().jvm.scienceworld.runtime.pythonapi.PythonInterface()

    def load(self, task: str, variation: int, simplifications: str, gold: bool) -> str:
        """Load a task variation and take the customary first ``look around``."""
        with JVM.engine_lock:
            try:
                self.server.load(task, variation, simplifications, gold)
            except Exception as exc:
                raise EnvError(f"ScienceWorld could not load {task} #{variation}: {exc}") from exc
            return str(self.server.step("look around"))

    def step(self, action: str) -> str:
        with JVM.engine_lock:
            return str(self.server.step(action))

    def score(self) -> float:
        """Score in ScienceWorld's usual 0-100 units (negative: failed)."""
        return round(100 * float(self.server.getScore()), 4)

    def completed(self) -> bool:
        return bool(self.server.getCompleted())

    def valid_actions(self) -> tuple[str, ...]:
        with JVM.engine_lock:
            return tuple(sorted(set(self.server.getValidActionObjectCombinations())))


class ScienceWorldEnv(ReplayEnvironment):
    """ScienceWorld's 30 tasks with gold-path experts that resume after deviations."""

    name = "sciworld"
    has_expert = True
    games = GAMES
    default_max_steps = 100

    def __init__(
        self,
        *,
        max_steps: int | None = None,
        games: list[str] | tuple[str, ...] | None = None,
        simplifications: str = "easy",
        valid_actions: bool = True,
        cache_dir: Any = None,
        expert_search_seconds: float = 60.0,
    ) -> None:
        super().__init__(max_steps=max_steps, games=games)
        del cache_dir  # nothing to cache: tasks are built in the JVM
        self.simplifications = simplifications
        self.want_valid_actions = valid_actions
        self.expert_search_seconds = expert_search_seconds
        self._gold: list[str] | None = None
        self._gold_task = ""
        # plan: (actions taken when adopted, [(action, gold index)]) - see `_expert`
        self._plan: tuple[int, list[tuple[str, int]]] = (0, [])
        self.replans = 0
        self.replan_failures = 0

    @cached_property
    def _sim(self) -> _Sim:
        return _Sim()  # created on first reset (starts the JVM)

    # --- catalogue ----------------------------------------------------------------------
    def seeds(self, game: str, split: Split) -> list[int]:
        """ScienceWorld's own variation split for ``game``."""
        self._check_game(game)
        return list(split_range(game, split))

    def game_params(self, game: str) -> dict[str, Any]:
        """The simplifications the task loads with."""
        return {"simplifications": self.simplifications}

    # --- engine -------------------------------------------------------------------------
    def _start(self, spec: TaskSpec) -> tuple[str, str, tuple[str, ...] | None, dict[str, Any]]:
        text = self._sim.load(spec.game, spec.seed, self.simplifications, False)
        if self._gold_task != spec.task_id:
            # Gold paths are not reproducible between generations (the world is), so a
            # restart of the same task (e.g. a restore) keeps the one it has.
            self._gold, self._gold_task = None, spec.task_id
        self._plan = (0, [(a, i) for i, a in enumerate(self._gold or [])])
        goal = str(self._sim.server.getTaskDescription())
        valid = self._sim.valid_actions() if self.want_valid_actions else None
        info = {"params": self.game_params(spec.game), "max_score": 100.0}
        return goal, text, valid, info

    def _engine_step(self, action: str) -> EngineStep:
        text = self._sim.step(action)
        score = self._sim.score()
        completed = self._sim.completed() or score < 0
        won = completed and score >= 100
        return EngineStep(
            text=text,
            score=score,
            done=completed,
            won=won,
            valid_actions=self._sim.valid_actions() if self.want_valid_actions else None,
            invalid=text.strip().startswith(NO_MATCH),
            info={"failed": completed and not won},
        )

    # --- expert -------------------------------------------------------------------------
    @cached_property
    def _scratch(self) -> _Sim:
        return _Sim()

    @property
    def gold_actions(self) -> tuple[str, ...]:
        """The task's gold action sequence (generated on first use, on the scratch sim)."""
        ep = self.episode
        if self._gold is None:
            sim = self._scratch
            sim.load(ep.spec.game, ep.spec.seed, self.simplifications, True)
            with JVM.engine_lock:
                self._gold = [str(a) for a in sim.server.getGoldActionSequence()]
            if self._plan == (0, []):
                self._plan = (0, [(a, i) for i, a in enumerate(self._gold)])
        return tuple(self._gold)

    def _expert(self, episode: Episode) -> str | None:
        gold = list(self.gold_actions)
        taken = episode.actions
        origin, plan = self._plan
        j = len(taken) - origin
        if 0 <= j < len(plan) and [a for a, _ in plan[:j]] == taken[origin:]:
            return plan[j][0]
        # Off the plan: resume the gold path where the first mismatch was due.
        since = taken[origin:]
        mismatch = [i for i, (a, _) in enumerate(plan) if i >= len(since) or since[i] != a]
        due = plan[mismatch[0]][1] if mismatch else len(gold)
        return self._resume(episode, gold, [due, due + 1])

    def _resume(self, episode: Episode, gold: list[str], starts: list[int]) -> str | None:
        """Adopt the first gold suffix (by start index) that wins from here, else None."""
        self.replans += 1
        deadline = time.monotonic() + self.expert_search_seconds
        taken = list(episode.actions)
        for start in starts:
            if start >= len(gold) or time.monotonic() > deadline:
                continue
            suffix = gold[start:]
            if self._wins(episode.spec, taken + suffix):
                self._plan = (len(taken), [(a, start + i) for i, a in enumerate(suffix)])
                return suffix[0]
        self.replan_failures += 1
        return None

    def _wins(self, spec: TaskSpec, actions: list[str]) -> bool:
        """Whether playing ``actions`` from the start wins (on the scratch simulator)."""
        sim = self._scratch
        sim.load(spec.game, spec.seed, self.simplifications, False)
        for action in actions:
            sim.step(action)
            score = sim.score()
            if sim.completed() or score < 0:
                return score >= 100
        return False

    def close(self) -> None:
        """Drop this instance's simulators (the shared JVM stays up for others)."""
        self.__dict__.pop("_scratch", None)
