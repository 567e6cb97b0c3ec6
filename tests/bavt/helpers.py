"""Fixtures for BAVT tests: a tiny cloneable tree environment and a scripted multihop model."""

from __future__ import annotations

import re

from nightowl.envs.base import Environment, Observation, Snapshot, StepResult, TaskSpec


class TreeEnv(Environment):
    """A deterministic game on a tree: actions "go a", "go b", ... from each node.

    The goal is reached by following ``gold`` (e.g. ["go b", "go a", "go c"]); every
    other path leads to dead ends at ``depth``. Observations name the node reached.
    """

    name = "tree"
    has_expert = True

    def __init__(self, gold=("go b", "go a", "go c"), branching=3, snapshots=True) -> None:
        self.gold = tuple(gold)
        self.branching = branching
        self._snapshots = snapshots
        self.path: list[str] = []
        self.steps_taken = 0

    def tasks(self, split):
        return [TaskSpec(task_id="tree/t/test/0", env="tree", split="test", game="t", seed=0)]

    def reset(self, task_id: str) -> Observation:
        self.path = []
        return Observation(task_id=task_id, goal="reach the treasure", text="You are at the root.",
                           valid_actions=self.valid())

    def valid(self) -> tuple[str, ...]:
        return tuple(f"go {chr(97 + i)}" for i in range(self.branching))

    def step(self, action: str) -> StepResult:
        self.steps_taken += 1
        if action not in self.valid():
            return StepResult(text="You can't do that.", invalid=True, valid_actions=self.valid())
        self.path.append(action)
        on_gold = tuple(self.path) == self.gold[: len(self.path)]
        if on_gold and len(self.path) == len(self.gold):
            return StepResult(text="You found the treasure!", done=True, won=True, reward=1.0)
        if len(self.path) >= len(self.gold):
            return StepResult(text="A dead end. The game is over.", done=True, won=False)
        where = "/".join(a[-1] for a in self.path)
        return StepResult(text=f"You are at node {where}.", valid_actions=self.valid())

    def expert_action(self):
        return self.gold[len(self.path)] if len(self.path) < len(self.gold) else None

    @property
    def can_snapshot(self) -> bool:
        return self._snapshots

    def snapshot(self) -> Snapshot:
        if not self._snapshots:
            raise NotImplementedError("tree cannot snapshot")
        return Snapshot(task_id="tree/t/test/0", actions=tuple(self.path))

    def restore(self, snapshot: Snapshot) -> None:
        self.path = list(snapshot.actions)


def new_step_action(prompt: str) -> str:
    """The action of the "New step" in a critic prompt."""
    m = re.search(r"New step:\nAction: (.*)\n", prompt)
    return m.group(1).strip() if m else ""


def actions_in(prompt: str) -> list[str]:
    """Actions already on the path in a proposal prompt (after the header)."""
    return re.findall(r"^Action: (.+)$", prompt, re.M)
