"""A toy environment registered with nightowl from outside its package.

Each task asks the agent to count up to a target (3 to 7, from the seed) with the
actions ``inc`` and ``dec``; it is won when the counter equals the target and the agent
says ``done``. The expert always knows the next right action, so the oracle teacher
works too. Task ids follow nightowl's form: ``toy/count/<split>/<seed>``.
"""

from __future__ import annotations

from nightowl.envs.base import (
    SPLITS,
    Environment,
    Observation,
    Snapshot,
    Split,
    StepResult,
    TaskSpec,
)
from nightowl.errors import UnknownNameError

ACTIONS = ("inc", "dec", "done")
_SEED_BASE = {"train": 0, "dev": 10_000, "test": 20_000}


class CounterEnv(Environment):
    """Count to a target; ``inc``/``dec`` move the counter, ``done`` ends the episode."""

    name = "toy"
    has_expert = True

    def __init__(self, *, tasks_per_split: int = 20, **_: object) -> None:
        self.tasks_per_split = tasks_per_split
        self.task_id = ""
        self.target = 0
        self.count = 0
        self.actions: list[str] = []

    def tasks(self, split: Split) -> list[TaskSpec]:
        """``tasks_per_split`` tasks per split, disjoint seeds."""
        base = _SEED_BASE[split]
        return [
            TaskSpec(task_id=f"toy/count/{split}/{seed}", env="toy", split=split, game="count",
                     seed=seed)
            for seed in range(base, base + self.tasks_per_split)
        ]

    def reset(self, task_id: str) -> Observation:
        """Start counting from 0 toward the task's target."""
        parts = task_id.split("/")
        if len(parts) != 4 or parts[:2] != ["toy", "count"] or parts[2] not in SPLITS:
            raise UnknownNameError("task", task_id)
        self.task_id, self.target, self.count, self.actions = task_id, 3 + int(parts[3]) % 5, 0, []
        return Observation(task_id=task_id, goal=f"count to {self.target}",
                           text="The counter shows 0.", valid_actions=ACTIONS)

    def step(self, action: str) -> StepResult:
        """Apply one action; anything else is invalid feedback."""
        action = action.strip().lower()
        if action not in ACTIONS:
            return StepResult(text=f"unknown action {action!r}", invalid=True,
                              valid_actions=ACTIONS)
        self.actions.append(action)
        if action == "done":
            won = self.count == self.target
            return StepResult(text="You stop counting.", done=True, won=won,
                              reward=float(won), score=float(won))
        self.count += 1 if action == "inc" else -1
        return StepResult(text=f"The counter shows {self.count}.", valid_actions=ACTIONS)

    def expert_action(self) -> str | None:
        """The next right action from the current state."""
        if self.count < self.target:
            return "inc"
        return "dec" if self.count > self.target else "done"

    @property
    def can_snapshot(self) -> bool:
        """State is the action list: snapshots are exact."""
        return True

    def snapshot(self) -> Snapshot:
        """The actions taken so far."""
        return Snapshot(task_id=self.task_id, actions=tuple(self.actions))

    def restore(self, snapshot: Snapshot) -> None:
        """Replay the saved actions."""
        self.reset(snapshot.task_id)
        for a in snapshot.actions:
            self.step(a)
