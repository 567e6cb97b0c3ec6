"""Service functions over the environment registry, shared by the CLI and the bench.

`describe_envs()` summarises every registered environment (games, task counts per
split, whether its package is installed); `play_expert()` plays one episode with the
environment's oracle teacher and reports each step through a callback.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nightowl.envs.base import SPLITS, Environment, StepResult
from nightowl.envs.registry import REQUIREMENTS, env_names, is_installed, make_env
from nightowl.errors import NightowlError


@dataclass(frozen=True, kw_only=True)
class EnvSummary:
    """One row of `nightowl envs list`."""

    name: str
    feature: str
    installed: bool
    extra: str | None
    games: tuple[str, ...] = ()
    counts: dict[str, int] = field(default_factory=dict)  # split -> tasks
    has_expert: bool = False
    error: str = ""


def describe_env(name: str, **kwargs: Any) -> EnvSummary:
    """Summarise ``name`` without starting an episode (an adapter that fails is reported)."""
    req = REQUIREMENTS.get(name)
    summary = functools.partial(
        EnvSummary,
        name=name,
        feature=req.feature if req else name,
        extra=req.extra if req else None,
    )
    if not is_installed(name):
        return summary(installed=False)
    try:
        env = make_env(name, **kwargs)
    except NightowlError as exc:
        return summary(installed=False, error=str(exc))
    try:
        counts: dict[str, int] = {split: len(env.tasks(split)) for split in SPLITS}
        games = tuple(getattr(env, "games", ()) or sorted({t.game for t in env.tasks("test")}))
        return summary(installed=True, games=games, counts=counts, has_expert=env.has_expert)
    finally:
        env.close()


def describe_envs() -> list[EnvSummary]:
    """Every registered environment, in registry order."""
    return [describe_env(name) for name in env_names()]


@dataclass(frozen=True, kw_only=True)
class StepRecord:
    """One step of a played episode."""

    index: int
    action: str
    result: StepResult


@dataclass(frozen=True, kw_only=True)
class EpisodeRecord:
    """A finished episode."""

    task_id: str
    goal: str
    actions: tuple[str, ...]
    won: bool
    score: float
    steps: int
    invalid: int
    seconds: float
    reset_seconds: float
    stopped: str  # "won", "lost", "step limit", "no expert action"


def play_expert(
    env: Environment,
    task_id: str,
    *,
    max_steps: int = 100,
    on_reset: Callable[[Any], None] | None = None,
    on_step: Callable[[StepRecord], None] | None = None,
) -> EpisodeRecord:
    """Play ``task_id`` with the environment's expert until done, None, or ``max_steps``."""
    t0 = time.perf_counter()
    obs = env.reset(task_id)
    reset_s = time.perf_counter() - t0
    if on_reset:
        on_reset(obs)
    actions: list[str] = []
    res: StepResult | None = None
    stopped = "step limit"
    invalid = 0
    for i in range(max_steps):
        action = env.expert_action()
        if action is None:
            stopped = "no expert action"
            break
        res = env.step(action)
        actions.append(action)
        invalid += int(res.invalid)
        if on_step:
            on_step(StepRecord(index=i + 1, action=action, result=res))
        if res.done:
            stopped = "won" if res.won else ("lost" if not res.info.get("truncated") else stopped)
            break
    return EpisodeRecord(
        task_id=task_id,
        goal=obs.goal,
        actions=tuple(actions),
        won=bool(res and res.won),
        score=res.score if res else 0.0,
        steps=len(actions),
        invalid=invalid,
        seconds=time.perf_counter() - t0,
        reset_seconds=reset_s,
        stopped=stopped,
    )
