"""The escalation ladder: tiers tried in order (student, ..., teacher) at every step.

A `Tier` looks at one `StepContext` (goal, observation, valid actions, bounded history,
retrieved demos, the episode budget, what lower tiers proposed) and returns a
`TierDecision`: either an accepted action with a confidence, or an escalation with a
recorded reason. The first tier that accepts acts. Every tier carries its own model,
sample count and acceptance rule, so new tiers (e.g. BAVT tree search) slot in between
the student and the teacher without touching the loop.

Tiers must respect ``ctx.budget``: check `Budget.can_afford` with an upper bound before
any paid call and escalate (reason ``"budget"``) when they cannot afford it. They
charge what they spent (``cost_usd``, ``tokens``, ``teacher_calls``, ``tool_calls``)
themselves and report it in the decision; the loop charges ``steps``.

When every tier escalates, `Ladder.fallback` decides: ``"best"`` acts with the most
supported candidate any tier proposed (recorded as such), ``"end"`` ends the episode
with the recorded reason.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from nightowl.agent.budget import Budget
from nightowl.ledger.pending import CallSite, PendingWrites
from nightowl.llm.base import Usage

Fallback = Literal["best", "end"]


@dataclass(kw_only=True)
class StepContext:
    """Everything a tier may look at for one decision (no growing transcripts).

    Attributes:
        run_id / episode_id / task_id / step: identity, for the ledger.
        goal: the task text.
        observation: the current observation text.
        valid_actions: actions valid now, when the environment lists them.
        history: the last few ``(observation, action)`` pairs (bounded by the loop).
        seen: `nightowl.agent.state.visit_key` of every (observation, action) taken so
            far this episode (loop detection beyond the short history).
        demos: retrieved demo windows (`nightowl.memory` DemoWindow objects).
        budget: the episode budget (shared, hard).
        env: the live environment (for oracle teachers and tree search); may be None.
        previous: decisions of lower tiers at this step, in order.
        extras: free-form per-step values tiers may share (e.g. a built prompt).
        pending: where the step's ledger rows are queued (the loop writes them with the
            step); None: metered models write their rows at once.
        offload: runs a blocking call (e.g. the environment's expert) the way the loop
            does: inline with one episode in flight, in a worker thread with several
            (default: always a worker thread).
    """

    run_id: str
    episode_id: str
    task_id: str
    step: int
    goal: str
    observation: str
    valid_actions: tuple[str, ...] | None = None
    history: tuple[tuple[str, str], ...] = ()
    seen: frozenset[str] = frozenset()
    demos: tuple[Any, ...] = ()
    budget: Budget = field(default_factory=Budget)
    env: Any = None
    env_name: str = ""
    previous: tuple[TierDecision, ...] = ()
    extras: dict[str, Any] = field(default_factory=dict)
    pending: PendingWrites | None = None
    offload: Callable[..., Awaitable[Any]] = asyncio.to_thread

    def call_site(self, role: str = "") -> CallSite:
        """Where a tier's model calls for this step are recorded (``role`` "": the model's)."""
        return CallSite(
            run_id=self.run_id, role=role, episode_id=self.episode_id or None, step=self.step,
            pending=self.pending,
        )


@dataclass(frozen=True, kw_only=True)
class TierDecision:
    """One tier's verdict on one step.

    Attributes:
        tier: the tier's name.
        actor: who acts if accepted ("student", "teacher", "oracle", "bavt", ...).
        action: the accepted action, or None when the tier escalates.
        confidence: the acceptance rule's confidence in [0, 1] (vote share, margin, ...).
        reason: why it accepted or escalated (e.g. "unanimous 3/3", "disagree 2/3",
            "budget", "model error: ...").
        samples: how many samples (or scoring passes) the tier drew.
        candidates: proposed (normalised) actions with their support, best first.
        usage: tokens the tier's calls used.
        cost_usd: what the tier's calls cost.
        teacher_calls: teacher calls made (counts against the teacher budget).
        latency_s: wall time inside the tier.
        meta: tier-specific extras (raw samples, parse failures, margins).
    """

    tier: str
    actor: str
    action: str | None = None
    confidence: float = 0.0
    reason: str = ""
    samples: int = 0
    candidates: tuple[tuple[str, float], ...] = ()
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    teacher_calls: int = 0
    latency_s: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        """Whether the tier accepted an action."""
        return self.action is not None


def accept(tier: str, actor: str, action: str, **kw: Any) -> TierDecision:
    """Shorthand for an accepting decision."""
    return TierDecision(tier=tier, actor=actor, action=action, **kw)


def escalate(tier: str, actor: str, reason: str, **kw: Any) -> TierDecision:
    """Shorthand for an escalating decision (``reason`` is recorded)."""
    return TierDecision(tier=tier, actor=actor, action=None, reason=reason, **kw)


class Tier(abc.ABC):
    """One rung of the ladder. Subclasses set `name`/`actor` and implement `decide`."""

    #: unique name within a ladder, e.g. "student", "bavt", "teacher"
    name: str = "tier"
    #: who acts when this tier accepts: "student", "teacher", "oracle", "bavt", ...
    actor: str = "student"

    @abc.abstractmethod
    async def decide(self, ctx: StepContext) -> TierDecision:
        """Accept an action for ``ctx`` or escalate with a reason.

        Must never raise for model/env failures (escalate instead) and must respect
        ``ctx.budget``.
        """

    def describe(self) -> dict[str, Any]:
        """Configuration for run records (model, n, rule, ...)."""
        return {"name": self.name, "actor": self.actor}


@dataclass(frozen=True, kw_only=True)
class TierParts:
    """What a tier factory gets to build a tier between the student and the teacher.

    A preset names its extra tiers as ``"module:factory"`` strings
    (`nightowl.agent.presets.Preset.escalations`); each factory is called with this
    and returns a `Tier`. ``student`` is the run's metered student model (use
    ``student.with_role(...)`` so its calls are billed under the tier's own role),
    ``prices`` its prices, ``ledger``/``run_id`` where calls are recorded.
    """

    student: Any
    prices: Any
    ledger: Any
    run_id: str


@dataclass(frozen=True, kw_only=True)
class LadderOutcome:
    """The final decision for a step plus every tier's verdict on the way."""

    decision: TierDecision
    trail: tuple[TierDecision, ...]

    @property
    def action(self) -> str | None:
        """The action to take, or None when the episode must end."""
        return self.decision.action


def best_supported(trail: Sequence[TierDecision]) -> tuple[str, float] | None:
    """The candidate with the highest total support across ``trail`` (ties: first seen)."""
    support: dict[str, float] = {}  # in first-seen order: max() keeps the first of a tie
    for dec in trail:
        for act, s in dec.candidates:
            support[act] = support.get(act, 0.0) + s
    if not support:
        return None
    act = max(support, key=support.__getitem__)
    return act, support[act]


class Ladder:
    """Tiers in escalation order, plus the rule for when every tier escalates.

    Args:
        tiers: cheapest first, most expensive (teacher) last.
        fallback: "best" = act with the best-supported candidate any tier proposed;
            "end" = end the episode with the recorded reason.
    """

    def __init__(self, tiers: Sequence[Tier], *, fallback: Fallback = "best") -> None:
        if not tiers:
            raise ValueError("a ladder needs at least one tier")
        names = [t.name for t in tiers]
        if len(set(names)) != len(names):
            raise ValueError(f"tier names must be unique: {names}")
        self.tiers: list[Tier] = list(tiers)
        self.fallback: Fallback = fallback

    def resolve(self, trail: Sequence[TierDecision]) -> TierDecision:
        """Apply the fallback rule after every tier escalated."""
        reasons = "; ".join(f"{d.tier}: {d.reason}" for d in trail)
        if self.fallback == "best":
            best = best_supported(trail)
            if best is not None:
                act, support = best
                return TierDecision(
                    tier="fallback",
                    actor=next(
                        (d.actor for d in trail for a, _ in d.candidates if a == act),
                        "student",
                    ),
                    action=act,
                    confidence=0.0,
                    reason=f"all tiers escalated ({reasons}); acting with best candidate",
                    meta={"support": support},
                )
        return TierDecision(
            tier="fallback",
            actor="none",
            action=None,
            reason=f"all tiers escalated ({reasons})",
        )

    async def decide(self, ctx: StepContext) -> LadderOutcome:
        """Run tiers in order until one accepts, else apply the fallback rule.

        The one escalation loop: the agent graph's ``decide`` node calls it, and so do
        benches and other callers.
        """
        trail: list[TierDecision] = []
        for t in self.tiers:
            dec = await t.decide(replace(ctx, previous=tuple(trail)))
            trail.append(dec)
            if dec.accepted:
                return LadderOutcome(decision=dec, trail=tuple(trail))
        return LadderOutcome(decision=self.resolve(trail), trail=tuple(trail))

    def describe(self) -> dict[str, Any]:
        """Configuration for run records."""
        return {"tiers": [t.describe() for t in self.tiers], "fallback": self.fallback}
