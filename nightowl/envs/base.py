"""The environment protocol every adapter implements.

An environment plays one task at a time: `reset(task_id)` starts it, `step(action)`
advances it. Where the environment has an expert, `expert_action()` answers from the
*current* state (the oracle teacher). Where it can, `snapshot()`/`restore()` let tree
search branch; adapters that can only replay return a snapshot holding the action
list and restore by replaying it.

Environments are synchronous (most are JVM or C engines); the agent loop runs them in
worker threads. Task ids are stable strings ``<env>/<game>/<split>/<seed>``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Literal

Split = Literal["train", "dev", "test"]
SPLITS: tuple[Split, ...] = ("train", "dev", "test")


@dataclass(frozen=True, kw_only=True)
class Observation:
    """What the agent sees after `reset`."""

    task_id: str
    goal: str
    text: str
    valid_actions: tuple[str, ...] | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class StepResult:
    """What the agent sees after `step`.

    Attributes:
        text: the environment's feedback (also for invalid actions).
        reward: reward of this step.
        score: cumulative score so far (environment units).
        done: the episode has ended (won, lost, or out of steps).
        won: the task was completed.
        valid_actions: actions valid in the new state, when known.
        invalid: the action was not understood / not applicable.
        info: adapter-specific extras.
    """

    text: str
    reward: float = 0.0
    score: float = 0.0
    done: bool = False
    won: bool = False
    valid_actions: tuple[str, ...] | None = None
    invalid: bool = False
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    """One task of a catalogue."""

    task_id: str
    env: str
    split: Split
    game: str
    seed: int
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """An opaque saved state; ``actions`` lets any adapter restore by replay."""

    task_id: str
    actions: tuple[str, ...]
    native: Any = None


class Environment(abc.ABC):
    """One running environment instance (not thread-safe; one episode at a time)."""

    #: registry name, e.g. "twx"
    name: str = "env"
    #: whether `expert_action` is available
    has_expert: bool = False
    #: how its actions are written: "line" (a command) or "code" (several lines of
    #: code); the student's prompt shows and samples them that way
    action_format: str = "line"
    #: whether the student sees a retrieved demo with its goal's values replaced by the
    #: current goal's (variants of one task: other names, titles, amounts)
    adapt_demo_values: bool = False
    #: the agent's step budget per episode here when a run names none (None: the one
    #: default, `nightowl.agent.budget.DEFAULT_MAX_STEPS`). Not ``default_max_steps``:
    #: that is a replay adapter's own step limit, where the environment ends an episode.
    default_budget_steps: int | None = None

    @abc.abstractmethod
    def tasks(self, split: Split) -> list[TaskSpec]:
        """The task catalogue for a split (deterministic)."""

    @abc.abstractmethod
    def reset(self, task_id: str) -> Observation:
        """Start the task; raises `UnknownNameError` for unknown ids."""

    @abc.abstractmethod
    def step(self, action: str) -> StepResult:
        """Take an action; invalid actions return feedback, never raise."""

    def expert_action(self) -> str | None:
        """The expert's next action from the current state, or None if it has none."""
        return None

    @property
    def can_snapshot(self) -> bool:
        """Whether `snapshot`/`restore` are supported."""
        return False

    def snapshot(self) -> Snapshot:
        """Save the current state."""
        raise NotImplementedError(f"{self.name} cannot snapshot")

    def restore(self, snapshot: Snapshot) -> None:
        """Return to a saved state."""
        raise NotImplementedError(f"{self.name} cannot restore")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""

    def __enter__(self) -> Environment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
