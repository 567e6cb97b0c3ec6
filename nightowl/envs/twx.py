"""TextWorld-Express adapter (``twx``): eight fast JVM text games.

One JVM per process, started on first use and shared by every adapter instance:
each instance owns its own game object (a ``PythonInterface``) on that JVM, so
instances do not disturb each other. Games are generated from (game, params, seed);
the engine's fold seeds are train 0-999, dev 10000-10999, test 20000-20999.

Expert (oracle teacher): the gold action sequence TWX computes at reset. While the
episode is on the gold path the expert returns its next action. After a deviation it
re-plans from the current state: it replays the taken actions on a private scratch
game and runs a bounded breadth-first search over valid actions (depth
``expert_search_depth``, at most ``expert_search_nodes`` expanded states) for either a
won state or a state equal to one on the gold path (equality = TWX object tree plus
score), then follows that path and the rest of the gold path. If the search finds
neither it returns None ("no expert from this state").
"""

from __future__ import annotations

import itertools
import json
import time
from collections import deque
from functools import cached_property
from pathlib import Path
from typing import Any

from nightowl.envs._jvm import SharedJVM
from nightowl.envs.base import TaskSpec
from nightowl.envs.common import EngineStep, Episode, ReplayEnvironment
from nightowl.errors import EnvError, MissingExtraError

try:
    from textworld_express.constants import BASEPATH, JAR_PATH
except ImportError as exc:  # core dependency, but say what is missing if it is
    raise MissingExtraError("TextWorld-Express", "envs", "textworld-express") from exc

GAMES: tuple[str, ...] = (
    "cookingworld",
    "twc",
    "coin",
    "mapreader",
    "arithmetic",
    "sorting",
    "simonsays",
    "peckingorder",
)

#: small defaults so that tests and demos stay fast; override with ``game_params=``
DEFAULT_PARAMS: dict[str, dict[str, int]] = {
    "cookingworld": {
        "numLocations": 3,
        "numIngredients": 2,
        "numDistractorItems": 2,
        "includeDoors": 0,
        "limitInventorySize": 0,
    },
    "twc": {"numLocations": 2, "numItemsToPutAway": 2, "includeDoors": 0, "limitInventorySize": 0},
    "coin": {
        "numLocations": 4,
        "numDistractorItems": 2,
        "includeDoors": 0,
        "limitInventorySize": 0,
    },
    "mapreader": {
        "numLocations": 4,
        "maxDistanceApart": 2,
        "maxDistractorItemsPerLocation": 1,
        "includeDoors": 0,
        "limitInventorySize": 0,
    },
    "arithmetic": {},
    "sorting": {},
    "simonsays": {"gameLength": 3, "numDistractors": 2},
    "peckingorder": {},
}

JVM = SharedJVM("TextWorld-Express", JAR_PATH, BASEPATH, ["-Xmx1g", "-XX:+UseSerialGC"])
_CURRENT = 0  # token of the game most recently generated on the JVM (see `_Game`)


class _Game:
    """One TWX game object on the shared JVM, remembering its setup and its actions.

    TWX keeps some game state in static (JVM-wide) structures: generating a game on one
    ``PythonInterface`` can corrupt a game already running on another (seen with
    ``sorting``: a later ``put ... in box`` becomes "Unknown action"). So every engine
    call holds one process-wide lock, and a game that is not the JVM's most recently
    generated one is regenerated and replayed (a few ms) before it is stepped.
    """

    _tokens = itertools.count(1)

    def __init__(self) -> None:
        self.server = JVM.gateway().jvm.textworldexpress.runtime.PythonInterface()
        self.token = next(self._tokens)
        self.loaded: tuple[str, str] | None = None
        self.setup: tuple[str, str, int, str] | None = None
        self.history: list[str] = []
        self.last: dict[str, Any] = {}
        self.gold: list[str] = []
        self.goal = ""

    def new_game(self, game: str, params: str, seed: int, fold: str, gold: bool) -> dict[str, Any]:
        """Generate a game; with ``gold`` also fetch its gold path and task description."""
        global _CURRENT
        with JVM.engine_lock:
            if self.loaded != (game, params):
                msg = self.server.load(game, params)
                if msg:
                    raise EnvError(f"TextWorld-Express rejected {game} {params!r}: {msg.strip()}")
                self.loaded = (game, params)
            self.last = json.loads(self.server.generateNewGameJSON(seed, fold, gold))
            _CURRENT = self.token
            self.setup = (game, params, seed, fold)
            self.history = []
            if gold:
                self.gold = [str(a) for a in self.server.getGoldActionSequence()]
                self.goal = str(self.server.getTaskDescription())
            return self.last

    def step(self, action: str) -> dict[str, Any]:
        """One action (regenerating and replaying first if another game was generated)."""
        global _CURRENT
        with JVM.engine_lock:
            if _CURRENT != self.token and self.setup is not None:
                game, params, seed, fold = self.setup
                json.loads(self.server.generateNewGameJSON(seed, fold, False))
                _CURRENT = self.token
                for past in self.history:
                    self.server.stepJSON(past)
            self.last = json.loads(self.server.stepJSON(action))
            self.history.append(action)
            return self.last

    def quick_key(self) -> str:
        """What the player sees (room, inventory, score): cheap, may merge distinct states."""
        r = self.last
        return f"{r.get('look')}|{r.get('inventory')}|{r.get('score')}"


def _valid(resp: dict[str, Any]) -> tuple[str, ...]:
    return tuple(sorted(set(resp.get("validActions") or ())))


class TextWorldExpressEnv(ReplayEnvironment):
    """TextWorld-Express games with gold-path experts that re-plan after deviations."""

    name = "twx"
    has_expert = True
    games = GAMES
    default_max_steps = 60

    def __init__(
        self,
        *,
        max_steps: int | None = None,
        games: list[str] | tuple[str, ...] | None = None,
        game_params: dict[str, dict[str, int]] | None = None,
        cache_dir: Path | None = None,
        expert_search_depth: int = 3,
        expert_search_nodes: int = 300,
        expert_search_seconds: float = 10.0,
    ) -> None:
        super().__init__(max_steps=max_steps, games=games)
        self._params = self._merge_params(DEFAULT_PARAMS, game_params)
        del cache_dir  # TWX generates games in memory; nothing to cache
        self.expert_search_depth = expert_search_depth
        self.expert_search_nodes = expert_search_nodes
        self.expert_search_seconds = expert_search_seconds
        self._gold: list[str] = []
        self._gold_quick: list[str] | None = None  # quick key before each gold action
        self._plan: tuple[int, list[str]] = (0, [])  # (actions taken when planned, actions)
        #: expert statistics, for tests and the bench
        self.replans = 0
        self.replan_failures = 0

    @cached_property
    def _game(self) -> _Game:
        return _Game()  # created on first reset (starts the JVM)

    # --- catalogue ----------------------------------------------------------------------
    def game_params(self, game: str) -> dict[str, Any]:
        """The generation parameters used for ``game``."""
        return dict(self._params[game])

    # --- engine -------------------------------------------------------------------------
    def _new_game(self, g: _Game, spec: TaskSpec, gold: bool) -> dict[str, Any]:
        params = ",".join(f"{k}={int(v)}" for k, v in self._params[spec.game].items())  # k=v,k=v
        return g.new_game(spec.game, params, spec.seed, spec.split, gold)

    def _start(self, spec: TaskSpec) -> tuple[str, str, tuple[str, ...] | None, dict[str, Any]]:
        resp = self._new_game(self._game, spec, gold=True)
        self._gold = list(self._game.gold)
        self._gold_quick = None
        self._plan = (0, list(self._gold))
        goal = self._game.goal
        info = {"params": self.game_params(spec.game), "gold_length": len(self._gold)}
        return goal, resp["observation"], _valid(resp), info

    def _engine_step(self, action: str) -> EngineStep:
        before = self.episode.valid_actions or ()
        resp = self._game.step(action)
        text = str(resp.get("observation", ""))
        known = action.lower() in {a.lower() for a in before}
        invalid = text.startswith("Unknown action") or not known
        won = bool(resp.get("tasksuccess"))
        return EngineStep(
            text=text,
            score=float(resp.get("score", 0.0)),
            done=won or bool(resp.get("taskfailure")),
            won=won,
            valid_actions=_valid(resp),
            invalid=invalid,
            info={"task_failure": bool(resp.get("taskfailure"))},
        )

    # --- expert -------------------------------------------------------------------------
    @property
    def gold_actions(self) -> tuple[str, ...]:
        """The gold action sequence computed at reset."""
        return tuple(self._gold)

    def _expert(self, episode: Episode) -> str | None:
        taken = episode.actions
        origin, plan = self._plan
        done_in_plan = len(taken) - origin
        if 0 <= done_in_plan < len(plan) and taken[origin:] == plan[:done_in_plan]:
            return plan[done_in_plan]
        return self._replan(episode)

    @cached_property
    def _scratch(self) -> _Game:
        return _Game()

    def _replay(self, spec: TaskSpec, actions: list[str]) -> dict[str, Any]:
        """Put the scratch game in the state after ``actions``; returns the last response."""
        g = self._scratch
        resp = self._new_game(g, spec, gold=False)
        for a in actions:
            resp = g.step(a)
        return resp

    def _gold_candidates(self, spec: TaskSpec, g: _Game) -> list[int]:
        """Gold-path indices (latest first, never the end) whose quick key matches ``g``'s."""
        if self._gold_quick is None:
            scratch = self._scratch
            self._replay(spec, [])
            quick = [scratch.quick_key()]
            for action in self._gold[:-1]:
                scratch.step(action)
                quick.append(scratch.quick_key())
            self._gold_quick = quick
        here = g.quick_key()
        return [i for i in range(len(self._gold_quick) - 1, -1, -1) if self._gold_quick[i] == here]

    def _replan(self, episode: Episode) -> str | None:
        """Bounded BFS from the current state to a verified winning plan.

        A state whose quick key matches a gold-path state proposes "this path, then the
        rest of the gold path"; the proposal is adopted only if replaying it wins (the
        quick key ignores parts of the world, so it is a hint, never a proof).
        """
        self.replans += 1
        spec, taken = episode.spec, list(episode.actions)
        deadline = time.monotonic() + self.expert_search_seconds
        budget = self.expert_search_nodes

        def try_resync(path: list[str], g: _Game) -> list[str] | None:
            nonlocal budget
            for k in self._gold_candidates(spec, g):
                budget -= 1
                if self._replay(spec, taken + path + self._gold[k:]).get("tasksuccess"):
                    return path + self._gold[k:]
            return None

        plan = try_resync([], self._game)
        if plan is not None:
            return self._adopt(len(taken), plan)
        seen = {self._game.quick_key()}
        frontier: deque[tuple[list[str], tuple[str, ...]]] = deque(
            [([], episode.valid_actions or ())]
        )
        while frontier:
            path, valid = frontier.popleft()
            if len(path) >= self.expert_search_depth:
                continue
            for action in self._ordered(valid):
                if budget <= 0 or time.monotonic() > deadline:
                    self.replan_failures += 1
                    return None
                budget -= 1
                new_path = path + [action]
                resp = self._replay(spec, taken + new_path)
                if resp.get("tasksuccess"):
                    return self._adopt(len(taken), new_path)
                key = self._scratch.quick_key()
                if resp.get("taskfailure") or key in seen:
                    continue
                seen.add(key)
                plan = try_resync(new_path, self._scratch)
                if plan is not None:
                    return self._adopt(len(taken), plan)
                frontier.append((new_path, _valid(resp)))
        self.replan_failures += 1
        return None

    def _ordered(self, valid: tuple[str, ...]) -> list[str]:
        """Gold-path actions first (likely useful), then the rest in a stable order."""
        gold = set(self._gold)
        return sorted(valid, key=lambda a: (a not in gold, a))

    def _adopt(self, origin: int, plan: list[str]) -> str | None:
        self._plan = (origin, plan)
        return plan[0] if plan else None

    def close(self) -> None:
        """Drop this instance's game objects (the shared JVM stays up for others)."""
        self.__dict__.pop("_scratch", None)
