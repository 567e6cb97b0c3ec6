"""The search tree of BAVT: nodes, the frontier, and budget-ratio selection.

`SearchTree` holds what one search accumulates (nodes, frontier, terminals, the states
already reached, counters, the critic's usage); `selection_probs` is the paper's
``V ** (1 / r)`` rule that turns broad exploration into greedy selection as the
remaining budget ratio ``r`` falls.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from nightowl.agent.search.space import SearchSpace, Step, action_key
from nightowl.llm.base import Usage

_MIN_VALUE = 1e-6


def selection_probs(values: Sequence[float], r: float, *, min_r: float = 1e-3) -> list[float]:
    """Probabilities proportional to ``V ** (1 / r)`` (computed in log space).

    ``r`` is clamped to ``[min_r, 1]``; values are clamped to ``[1e-6, 1]``.
    """
    if not values:
        return []
    r = min(max(r, min_r), 1.0)
    return softmax([math.log(min(max(v, _MIN_VALUE), 1.0)) / r for v in values])


def softmax(xs: Sequence[float]) -> list[float]:
    """``exp(x)`` of each of ``xs`` over their sum (shifted by the largest, for range)."""
    top = max(xs)
    ws = [math.exp(x - top) for x in xs]
    z = sum(ws)
    return [w / z for w in ws]


def weighted_choice(rng: random.Random, probs: Sequence[float]) -> int:
    """Index drawn from ``probs`` with ``rng`` (deterministic under its seed)."""
    x = rng.random()
    acc = 0.0
    for i, p in enumerate(probs):
        acc += p
        if x < acc:
            return i
    return len(probs) - 1


def clip_value(v: float) -> float:
    """A value clipped to [0, 1]."""
    return min(1.0, max(0.0, v))


@dataclass(kw_only=True)
class Node:
    """One partial trajectory (its last step and the state it reached)."""

    id: int
    parent: int | None
    step: Step | None
    snapshot: Any
    value: float
    delta: float = 0.0
    depth: int = 0
    terminal: bool = False
    won: bool | None = None
    valid_actions: tuple[str, ...] | None = None
    expansions: int = 0
    children: list[int] = field(default_factory=list)
    pruned: str | None = None
    critic: Any = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data for traces."""
        return {
            "id": self.id,
            "parent": self.parent,
            "action": self.step.action if self.step else None,
            "value": round(self.value, 4),
            "delta": round(self.delta, 4),
            "depth": self.depth,
            "terminal": self.terminal,
            "pruned": self.pruned,
            "critic": self.critic,
        }


@dataclass(kw_only=True)
class SearchTree:
    """Everything one search accumulates.

    Attributes:
        nodes: all nodes by id (the root is 0).
        frontier: ids of nodes that may still be expanded.
        terminals: ids of unpruned terminal nodes (answers, finished episodes).
        states: state keys already reached (duplicate states are pruned).
        stats: counters reported with the result.
        critic_usage: usage of every critic call.
    """

    nodes: list[Node]
    frontier: list[int]
    terminals: list[int] = field(default_factory=list)
    states: set[Any] = field(default_factory=set)
    stats: Counter[str] = field(default_factory=Counter)
    critic_usage: list[Usage] = field(default_factory=list)

    @classmethod
    def start(cls, space: SearchSpace, v_root: float) -> SearchTree:
        """A tree holding only the root (the space's current state)."""
        root = Node(
            id=0, parent=None, step=None, snapshot=space.root, value=v_root,
            valid_actions=space.valid_actions,
        )
        return cls(nodes=[root], frontier=[0], states={space.state_key(())})

    @property
    def root(self) -> Node:
        """The root node."""
        return self.nodes[0]

    @property
    def next_id(self) -> int:
        """The id the next added node gets."""
        return len(self.nodes)

    def path(self, node: Node) -> list[Step]:
        """Steps from the root to ``node``."""
        out: list[Step] = []
        cur: Node | None = node
        while cur is not None and cur.step is not None:
            out.append(cur.step)
            cur = self.nodes[cur.parent] if cur.parent is not None else None
        return out[::-1]

    def best_terminal(self) -> Node | None:
        """The highest-valued unpruned terminal (ties: the earliest)."""
        live = (self.nodes[i] for i in self.terminals if self.nodes[i].pruned is None)
        return max(live, key=lambda n: (n.value, -n.id), default=None)

    def best_partial(self) -> Node | None:
        """The highest-valued unpruned non-terminal (ties: deeper, then earlier)."""
        live = (n for n in self.nodes if n.pruned is None and not n.terminal)
        return max(live, key=lambda n: (n.value, n.depth, -n.id), default=None)

    def select(self, rng: random.Random, remaining_ratio: float) -> Node:
        """Draw a frontier node with probability ``V ** (1 / r)``."""
        cands = [self.nodes[i] for i in self.frontier]
        probs = selection_probs([n.value for n in cands], remaining_ratio)
        return cands[weighted_choice(rng, probs)]

    def add_child(self, parent: Node, child: Node, max_depth: int) -> None:
        """Attach ``child``; unpruned terminals become candidates, others frontier."""
        self.nodes.append(child)
        parent.children.append(child.id)
        if child.terminal and child.pruned is None:
            self.terminals.append(child.id)
        elif child.pruned is None and child.depth < max_depth:
            self.frontier.append(child.id)

    def child_keys(self, node: Node) -> set[str]:
        """Action keys of ``node``'s children (duplicate proposals are skipped)."""
        return {action_key(st.action) for c in node.children
                if (st := self.nodes[c].step) is not None}
