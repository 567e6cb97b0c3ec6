"""Acceptance rules: when does the student act on its own samples?

Each rule sees answers that are already normalised (`normalize_action`), so "Go North."
and "go north" vote together; a parse failure (None) is a vote for nobody.

- `Unanimity(n)`: draw ``n`` samples in one batch; act only if all agree.
- `Majority(n, tau)`: draw ``n``; act if the top answer has a share >= ``tau``.
- `Sequential(n, tau)`: draw one sample at a time (or ``batch`` at a time) and stop as
  soon as agreement is certain (the top answer already has ``ceil(tau * n)`` votes) or
  impossible (it cannot reach that with the samples left). Same verdict as
  `Majority(n, tau)` on the same sample stream, with fewer samples drawn.
- `LogprobMargin(threshold)`: score every valid action once with the model
  (log p(" action" | prompt)); act if top-1 minus top-2 log-probability >= threshold.
  Deterministic and one pass; the threshold is calibrated on the dev split.
- `DemoAgreement(threshold, mode)`: the same scores plus a second opinion that costs no
  model call: the action the nearest retrieved demo step took, mapped onto this state's
  valid actions (`nightowl.distill.signals.demo_hint`). ``demo-agree`` accepts the
  top-scored action iff the demo did the same; ``margin+demo:T`` iff it agrees *and*
  the margin is >= T (precision); ``margin|demo:T`` iff it agrees *or* the margin is
  >= T (coverage). Which one, and T, are chosen by `nightowl calibrate` on dev.

Rules that use demos say so (``uses_demos``); the student tier then passes
``demo_action=`` to `judge_scores`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from nightowl.distill.parser import normalize_action

#: draws ``k`` more samples and returns their parsed answers (None = unparseable)
Draw = Callable[[int], Awaitable[list[str | None]]]


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """A rule's outcome: the accepted (normalised) answer or None, with its evidence."""

    action: str | None
    confidence: float
    samples: int
    candidates: tuple[tuple[str, float], ...]
    reason: str

    @property
    def accepted(self) -> bool:
        """Whether the rule accepted an answer."""
        return self.action is not None


def tally(answers: Sequence[str | None]) -> tuple[tuple[str, float], ...]:
    """Votes per normalised answer, most votes first (ties: first seen)."""
    counts: Counter[str] = Counter()
    order: dict[str, int] = {}
    for a in answers:
        if a is None:
            continue
        n = normalize_action(a)
        if not n:
            continue
        counts[n] += 1
        order.setdefault(n, len(order))
    ranked = sorted(counts, key=lambda k: (-counts[k], order[k]))
    return tuple((k, float(counts[k])) for k in ranked)


class AcceptanceRule:  # noqa: B024 - subclasses implement judge or judge_scores
    """A rule over samples (`judge`) or over scores of valid actions (`judge_scores`)."""

    name: str = "rule"
    #: how many samples (or scoring passes) the rule may draw at most, for budget bounds
    max_samples: int = 1
    #: True: the rule needs `judge_scores` (log-probabilities of the valid actions)
    uses_scores: bool = False
    #: True: the rule needs ``demo_action=`` (the nearest demo step's mapped action)
    uses_demos: bool = False

    async def judge(self, draw: Draw) -> Verdict:
        """Decide from samples drawn with ``draw``."""
        raise NotImplementedError(f"{self.name} judges scores, not samples")

    def judge_scores(
        self,
        actions: Sequence[str],
        logprobs: Sequence[float],
        *,
        demo_action: str | None = None,
    ) -> Verdict:
        """Decide from scores of candidate actions (and the demo's action, if used)."""
        raise NotImplementedError(f"{self.name} judges samples, not scores")

    def describe(self) -> dict[str, Any]:
        """Parameters, for run records."""
        return {"rule": self.name}


def _share_verdict(
    answers: Sequence[str | None], total: int, need: int, label: str
) -> Verdict:
    cands = tally(answers)
    top, votes = (cands[0] if cands else (None, 0.0))
    conf = votes / total if total else 0.0
    if top is not None and votes >= need:
        return Verdict(
            action=top,
            confidence=conf,
            samples=len(answers),
            candidates=cands,
            reason=f"{label} {int(votes)}/{len(answers)}",
        )
    failures = sum(1 for a in answers if a is None)
    why = f"disagree {int(votes)}/{len(answers)} (need {need})"
    if failures:
        why += f", {failures} unparseable"
    return Verdict(action=None, confidence=conf, samples=len(answers), candidates=cands, reason=why)


class Unanimity(AcceptanceRule):
    """All ``n`` samples (drawn in one batch) must agree."""

    def __init__(self, n: int = 3) -> None:
        if n < 1:
            raise ValueError("n must be >= 1")
        self.n = n
        self.max_samples = n
        self.name = f"unanimity(n={n})"

    async def judge(self, draw: Draw) -> Verdict:
        """One batch of ``n``; accept iff all agree."""
        answers = (await draw(self.n))[: self.n]
        return _share_verdict(answers, self.n, self.n, "unanimous")

    def describe(self) -> dict[str, Any]:
        """Parameters."""
        return {"rule": "unanimity", "n": self.n}


class Majority(AcceptanceRule):
    """The top answer of ``n`` samples (one batch) needs a share >= ``tau``."""

    def __init__(self, n: int = 5, tau: float = 0.6) -> None:
        if n < 1 or not 0 < tau <= 1:
            raise ValueError("need n >= 1 and 0 < tau <= 1")
        self.n = n
        self.tau = tau
        self.need = math.ceil(tau * n - 1e-9)
        self.max_samples = n
        self.name = f"majority(n={n},tau={tau:g})"

    async def judge(self, draw: Draw) -> Verdict:
        """One batch of ``n``; accept iff the top share reaches ``tau``."""
        answers = (await draw(self.n))[: self.n]
        return _share_verdict(answers, self.n, self.need, "majority")

    def describe(self) -> dict[str, Any]:
        """Parameters."""
        return {"rule": "majority", "n": self.n, "tau": self.tau}


class Sequential(AcceptanceRule):
    """Majority(n, tau) decided with as few samples as possible.

    Draws ``batch`` samples at a time; stops when the top answer has ``ceil(tau*n)``
    votes (accept) or no answer can reach that with the samples left (escalate).
    ``tau=1`` is sequential unanimity: it stops at the first disagreement.
    """

    def __init__(self, n: int = 5, tau: float = 1.0, batch: int = 1) -> None:
        if n < 1 or not 0 < tau <= 1 or batch < 1:
            raise ValueError("need n >= 1, 0 < tau <= 1, batch >= 1")
        self.n = n
        self.tau = tau
        self.batch = batch
        self.need = math.ceil(tau * n - 1e-9)
        self.max_samples = n
        self.name = f"sequential(n={n},tau={tau:g})"

    async def judge(self, draw: Draw) -> Verdict:
        """Draw until agreement is certain or impossible."""
        answers: list[str | None] = []
        while len(answers) < self.n:
            k = min(self.batch, self.n - len(answers))
            answers.extend((await draw(k))[:k])
            cands = tally(answers)
            top = cands[0][1] if cands else 0.0
            left = self.n - len(answers)
            if top >= self.need:
                v = _share_verdict(answers, self.n, self.need, "sequential")
                return Verdict(
                    action=v.action,
                    confidence=top / len(answers),
                    samples=len(answers),
                    candidates=v.candidates,
                    reason=f"agreement certain after {len(answers)}/{self.n}",
                )
            if top + left < self.need:
                return Verdict(
                    action=None,
                    confidence=top / len(answers),
                    samples=len(answers),
                    candidates=cands,
                    reason=f"agreement impossible after {len(answers)}/{self.n}",
                )
        return _share_verdict(answers, self.n, self.need, "sequential")  # pragma: no cover

    def describe(self) -> dict[str, Any]:
        """Parameters."""
        return {"rule": "sequential", "n": self.n, "tau": self.tau, "batch": self.batch}


def _logsumexp(xs: Sequence[float]) -> float:
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def rank_actions(
    actions: Sequence[str], logprobs: Sequence[float]
) -> tuple[str, float, tuple[tuple[str, float], ...]] | None:
    """(top action, top-1 minus top-2 score, normalised probabilities) or None.

    Actions equal after normalisation are merged (log-sum-exp); non-finite scores dropped.
    """
    pairs = [
        (normalize_action(a), float(lp))
        for a, lp in zip(actions, logprobs, strict=True)
        if normalize_action(a) and math.isfinite(lp)
    ]
    if not pairs:
        return None
    merged: dict[str, list[float]] = {}
    for a, lp in pairs:
        merged.setdefault(a, []).append(lp)
    ranked = sorted(((a, _logsumexp(v)) for a, v in merged.items()), key=lambda p: -p[1])
    z = _logsumexp([lp for _, lp in ranked])
    probs = tuple((a, math.exp(lp - z)) for a, lp in ranked)
    margin = ranked[0][1] - ranked[1][1] if len(ranked) > 1 else math.inf
    return ranked[0][0], margin, probs


class LogprobMargin(AcceptanceRule):
    """Accept the top-scored action when log p(top1) - log p(top2) >= ``threshold``.

    ``length_normalize`` divides each log-probability by the continuation's token count
    (off by default: valid actions are short and the raw sum is the model's choice).
    """

    uses_scores = True

    def __init__(self, threshold: float = 1.0) -> None:
        self.threshold = float(threshold)
        self.max_samples = 1
        self.name = f"margin(>={threshold:g})"

    def judge_scores(
        self,
        actions: Sequence[str],
        logprobs: Sequence[float],
        *,
        demo_action: str | None = None,
    ) -> Verdict:
        """Rank actions by score and compare the top-2 margin."""
        ranked = rank_actions(actions, logprobs)
        if ranked is None:
            return Verdict(
                action=None, confidence=0.0, samples=1, candidates=(), reason="no scores"
            )
        top, margin, probs = ranked
        ok = margin >= self.threshold
        return Verdict(
            action=top if ok else None,
            confidence=probs[0][1],
            samples=1,
            candidates=probs,
            reason=f"margin {margin:.2f} {'>=' if ok else '<'} {self.threshold:g}",
        )

    def describe(self) -> dict[str, Any]:
        """Parameters."""
        return {"rule": "margin", "threshold": self.threshold}


class DemoAgreement(AcceptanceRule):
    """Accept the top-scored action by agreement with the nearest demo step's action.

    Args:
        threshold: the margin threshold combined with agreement (None: agreement only).
        mode: "and" -- agree and margin >= threshold; "or" -- agree or margin >= threshold.
    """

    uses_scores = True
    uses_demos = True

    def __init__(self, threshold: float | None = None, mode: str = "and") -> None:
        if mode not in ("and", "or"):
            raise ValueError("mode must be 'and' or 'or'")
        if mode == "or" and threshold is None:
            raise ValueError("margin|demo needs a threshold")
        self.threshold = None if threshold is None else float(threshold)
        self.mode = mode
        self.max_samples = 1
        if threshold is None:
            self.name = "demo-agree"
        else:
            self.name = f"margin{'+' if mode == 'and' else '|'}demo(>={threshold:g})"

    def judge_scores(
        self,
        actions: Sequence[str],
        logprobs: Sequence[float],
        *,
        demo_action: str | None = None,
    ) -> Verdict:
        """Accept by agreement (and/or margin)."""
        ranked = rank_actions(actions, logprobs)
        if ranked is None:
            return Verdict(
                action=None, confidence=0.0, samples=1, candidates=(), reason="no scores"
            )
        top, margin, probs = ranked
        agree = demo_action is not None and normalize_action(demo_action) == top
        sure = self.threshold is not None and margin >= self.threshold
        if self.threshold is None:
            ok = agree
        elif self.mode == "and":
            ok = agree and sure
        else:
            ok = agree or sure
        why = "demo agrees" if agree else (
            "no demo action" if demo_action is None else f"demo did {demo_action!r}"
        )
        if self.threshold is not None:
            why += f", margin {margin:.2f} {'>=' if sure else '<'} {self.threshold:g}"
        return Verdict(
            action=top if ok else None,
            confidence=probs[0][1],
            samples=1,
            candidates=probs,
            reason=why,
        )

    def describe(self) -> dict[str, Any]:
        """Parameters."""
        return {"rule": "demo", "threshold": self.threshold, "mode": self.mode}


def parse_rule(spec: str) -> AcceptanceRule:
    """Build a rule from a short spec.

    Specs: ``unanimity:3``, ``majority:5:0.6``, ``sequential:5:1.0``, ``margin:1.5``,
    ``demo-agree``, ``margin+demo:1.0`` (agree and margin), ``margin|demo:3.0``
    (agree or margin).
    """
    parts = spec.strip().lower().split(":")
    kind, args = parts[0], parts[1:]
    try:
        if kind in ("unanimity", "unanimous", "all"):
            return Unanimity(int(args[0]) if args else 3)
        if kind == "majority":
            return Majority(int(args[0]) if args else 5, float(args[1]) if len(args) > 1 else 0.6)
        if kind in ("sequential", "seq"):
            return Sequential(
                int(args[0]) if args else 5, float(args[1]) if len(args) > 1 else 1.0
            )
        if kind == "margin":
            return LogprobMargin(float(args[0]) if args else 1.0)
        if kind in ("demo-agree", "demo"):
            return DemoAgreement(None)
        if kind in ("margin+demo", "demo+margin"):
            return DemoAgreement(float(args[0]) if args else 0.0, "and")
        if kind in ("margin|demo", "demo|margin"):
            return DemoAgreement(float(args[0]) if args else 3.0, "or")
    except (ValueError, IndexError) as exc:
        from nightowl.errors import ConfigError

        raise ConfigError(f"bad acceptance rule {spec!r}: {exc}") from None
    from nightowl.errors import ConfigError

    raise ConfigError(
        f"unknown acceptance rule {spec!r}; use unanimity:N, majority:N:TAU, "
        "sequential:N:TAU, margin:THRESHOLD, demo-agree, margin+demo:T or margin|demo:T"
    )
