"""Shared machinery for the replay-based adapters (TextWorld-Express, TextWorld, ScienceWorld).

`ReplayEnvironment` keeps the episode bookkeeping every adapter needs in one place:
the task id check, the list of actions taken (which is also the snapshot), the step
limit, actions after the end, and garbage-action hygiene. A subclass implements the
engine side: `_start(spec)` to begin a task, `_engine_step(action)` to advance it, and
optionally `_expert()` for the oracle teacher.

Snapshots hold the action list; `restore` resets the same task and replays it (the
engines here are deterministic given task and seed), so every adapter can branch.
`cache_dir_for` gives the cache folder of any adapter that keeps files.
"""

from __future__ import annotations

import abc
import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nightowl.envs.base import (
    SPLITS,
    Environment,
    Observation,
    Snapshot,
    Split,
    StepResult,
    TaskSpec,
)
from nightowl.envs.task_ids import parse_task_id, task_spec
from nightowl.errors import EnvError, UnknownNameError

#: actions are cut to this length before they reach an engine (Jericho takes < 198 bytes)
MAX_ACTION_CHARS = 150


def cache_dir_for(env: str, cache_dir: str | Path | None = None) -> Path:
    """``cache_dir`` when given, else ``<settings.resolved_cache_dir>/<env>``."""
    if cache_dir is not None:
        return Path(cache_dir)
    from nightowl.config import get_settings

    return get_settings().resolved_cache_dir / env


def clean_action(action: object) -> str:
    """Normalise an action for an engine: a str, one line, bounded length, no control chars."""
    text = action if isinstance(action, str) else str(action)
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    return " ".join(text.split())[:MAX_ACTION_CHARS]


@dataclass(kw_only=True)
class EngineStep:
    """What an engine returns for one action (before the step limit is applied)."""

    text: str
    score: float
    done: bool
    won: bool
    valid_actions: tuple[str, ...] | None = None
    invalid: bool = False
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class Episode:
    """The running episode's bookkeeping."""

    spec: TaskSpec
    goal: str
    actions: list[str] = field(default_factory=list)
    score: float = 0.0
    done: bool = False
    won: bool = False
    valid_actions: tuple[str, ...] | None = None
    invalid_actions: int = 0


class ReplayEnvironment(Environment, abc.ABC):
    """An adapter whose snapshots are action lists restored by reset + replay."""

    #: games this adapter offers (catalogue order)
    games: tuple[str, ...] = ()
    #: default episode step limit
    default_max_steps: int = 100
    #: every game's seeds per split, where `seeds` is not overridden (TextWorld-Express's
    #: own fold seeds; TextWorld uses the same ranges)
    split_seeds: dict[str, range] = {
        "train": range(1000),
        "dev": range(10000, 11000),
        "test": range(20000, 21000),
    }

    def __init__(
        self, *, max_steps: int | None = None, games: Sequence[str] | None = None
    ) -> None:
        self.max_steps = int(max_steps or self.default_max_steps)
        if self.max_steps < 1:
            raise EnvError(f"{self.name}: max_steps must be >= 1, got {max_steps}")
        if games is not None:  # restrict the catalogue to these games
            self.games = tuple(self._check_game(g) for g in games)
        self._episode: Episode | None = None

    def _merge_params(
        self, defaults: dict[str, dict[str, Any]], overrides: dict[str, dict[str, Any]] | None
    ) -> dict[str, dict[str, Any]]:
        """Per-game parameters: ``defaults`` updated with ``overrides`` (known games only)."""
        merged = copy.deepcopy(defaults)
        for game, params in (overrides or {}).items():
            merged[self._check_game(game)].update(params)
        return merged

    # --- catalogue ----------------------------------------------------------------------
    def seeds(self, game: str, split: Split) -> list[int]:
        """The seeds (or variation numbers) of ``game`` in ``split``, in order."""
        self._check_game(game)
        return list(self.split_seeds[split])

    def game_params(self, game: str) -> dict[str, Any]:
        """The generation parameters of ``game`` (recorded in every TaskSpec)."""
        return {}

    def tasks(self, split: Split, game: str | None = None) -> list[TaskSpec]:
        """The catalogue for ``split``, game by game (all games unless ``game`` is given)."""
        if split not in SPLITS:
            raise UnknownNameError("split", str(split), list(SPLITS))
        games = self.games if game is None else (self._check_game(game),)
        return [self._spec(g, split, seed) for g in games for seed in self.seeds(g, split)]

    def task_ids(
        self, split: Split, game: str | None = None, limit: int | None = None
    ) -> list[str]:
        """Task ids of a split (the first ``limit``)."""
        return [t.task_id for t in self.tasks(split, game)[:limit]]

    def spec(self, task_id: str) -> TaskSpec:
        """Validate ``task_id`` against this catalogue and return its spec."""
        env, game, split, seed = parse_task_id(task_id)
        if env != self.name:
            raise UnknownNameError(f"task for environment {self.name!r}", task_id, [self.name])
        self._check_game(game)
        seeds = self.seeds(game, split)
        if seed not in seeds:
            shown = _describe_seeds(seeds)
            raise UnknownNameError(f"seed for {self.name}/{game}/{split} ({shown})", str(seed))
        return self._spec(game, split, seed)

    def _spec(self, game: str, split: Split, seed: int) -> TaskSpec:
        return task_spec(self.name, game, split, seed, self.game_params(game))

    def _check_game(self, game: str) -> str:
        if game not in self.games:
            raise UnknownNameError(f"{self.name} game", game, list(self.games))
        return game

    # --- engine hooks -------------------------------------------------------------------
    @abc.abstractmethod
    def _start(self, spec: TaskSpec) -> tuple[str, str, tuple[str, ...] | None, dict[str, Any]]:
        """Begin ``spec`` in the engine: (goal, observation text, valid actions, info)."""

    @abc.abstractmethod
    def _engine_step(self, action: str) -> EngineStep:
        """Advance the engine by one (already cleaned) action."""

    def _expert(self, episode: Episode) -> str | None:
        """The expert's next action from the current state (episode not done)."""
        return None

    # --- protocol -----------------------------------------------------------------------
    @property
    def episode(self) -> Episode:
        """The running episode (raises if `reset` was never called)."""
        if self._episode is None:
            raise EnvError(f"{self.name}: call reset(task_id) before step()")
        return self._episode

    @property
    def actions(self) -> tuple[str, ...]:
        """Actions taken so far in this episode."""
        return tuple(self.episode.actions)

    def reset(self, task_id: str) -> Observation:
        """Start ``task_id``; unknown ids raise `UnknownNameError` listing what exists."""
        spec = self.spec(task_id)
        self._episode = None
        goal, text, valid, info = self._start(spec)
        self._episode = Episode(spec=spec, goal=goal, valid_actions=valid)
        info = {"game": spec.game, "seed": spec.seed, "split": spec.split, **info}
        return Observation(
            task_id=spec.task_id, goal=goal, text=text, valid_actions=valid, info=info
        )

    def step(self, action: str) -> StepResult:
        """Take ``action``; bad actions are answered with the engine's feedback, never raised."""
        ep = self.episode
        cleaned = clean_action(action)
        if ep.done:
            return StepResult(
                text="The episode is over; call reset() to start a task.",
                score=ep.score,
                done=True,
                won=ep.won,
                invalid=True,
                info={"action": cleaned, "after_end": True},
            )

        def unchanged(text: str, **info: Any) -> EngineStep:  # an invalid step, state as it was
            return EngineStep(
                text=text,
                score=ep.score,
                done=False,
                won=False,
                valid_actions=ep.valid_actions,
                invalid=True,
                info=info,
            )

        if not cleaned:
            # Empty input: engines answer it inconsistently; answer for them, count a step.
            res = unchanged("Please type a command.")
        else:
            try:
                res = self._engine_step(cleaned)
            except EnvError:
                raise
            except Exception as exc:  # an engine rejecting input must not end the run
                res = unchanged(
                    f"The game could not process that command ({type(exc).__name__}).",
                    engine_error=str(exc)[:300],
                )
        ep.actions.append(cleaned)
        ep.invalid_actions += int(res.invalid)
        reward = res.score - ep.score
        ep.score, ep.won, ep.valid_actions = res.score, res.won, res.valid_actions
        truncated = not res.done and len(ep.actions) >= self.max_steps
        ep.done = res.done or truncated
        info = {"action": cleaned, "steps": len(ep.actions), **res.info}
        if truncated:
            info["truncated"] = True
        if cleaned != action:
            info["action_raw_len"] = len(action) if isinstance(action, str) else None
        return StepResult(
            text=res.text,
            reward=reward,
            score=res.score,
            done=ep.done,
            won=ep.won,
            valid_actions=res.valid_actions,
            invalid=res.invalid,
            info=info,
        )

    def expert_action(self) -> str | None:
        """The expert's next action from the current state, or None (see the adapter)."""
        if self._episode is None or self._episode.done:
            return None
        return self._expert(self._episode)

    @property
    def can_snapshot(self) -> bool:
        """Replay snapshots are always available."""
        return True

    def snapshot(self) -> Snapshot:
        """The current state as the action list (restored by replay)."""
        ep = self.episode
        return Snapshot(task_id=ep.spec.task_id, actions=tuple(ep.actions))

    def restore(self, snapshot: Snapshot) -> None:
        """Reset the snapshot's task and replay its actions."""
        self.reset(snapshot.task_id)
        for action in snapshot.actions:
            self.step(action)


def _describe_seeds(seeds: list[int]) -> str:
    if not seeds:
        return "none"
    if seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    head = ", ".join(str(s) for s in seeds[:12])
    return head + (f", ... ({len(seeds)} in all)" if len(seeds) > 12 else "")
