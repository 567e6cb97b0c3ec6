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

    async def judge(self, draw: Draw) -> Verdict:
        """Decide from samples drawn with ``draw``."""
        raise NotImplementedError(f"{self.name} judges scores, not samples")

    def judge_scores(self, actions: Sequence[str], logprobs: Sequence[float]) -> Verdict:
        """Decide from log-probabilities of candidate actions."""
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

    def judge_scores(self, actions: Sequence[str], logprobs: Sequence[float]) -> Verdict:
        """Rank actions by log-probability and compare the top-2 margin."""
        pairs = [
            (normalize_action(a), float(lp))
            for a, lp in zip(actions, logprobs, strict=True)
            if normalize_action(a) and math.isfinite(lp)
        ]
        if not pairs:
            return Verdict(
                action=None, confidence=0.0, samples=1, candidates=(), reason="no scores"
            )
        # merge duplicates after normalisation (log-sum-exp)
        merged: dict[str, list[float]] = {}
        for a, lp in pairs:
            merged.setdefault(a, []).append(lp)
        ranked = sorted(((a, _logsumexp(v)) for a, v in merged.items()), key=lambda p: -p[1])
        z = _logsumexp([lp for _, lp in ranked])
        probs = tuple((a, math.exp(lp - z)) for a, lp in ranked)
        margin = ranked[0][1] - ranked[1][1] if len(ranked) > 1 else math.inf
        top = ranked[0][0]
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


def parse_rule(spec: str) -> AcceptanceRule:
    """Build a rule from a short spec.

    Specs: ``unanimity:3``, ``majority:5:0.6``, ``sequential:5:1.0``, ``margin:1.5``.
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
    except (ValueError, IndexError) as exc:
        from nightowl.errors import ConfigError

        raise ConfigError(f"bad acceptance rule {spec!r}: {exc}") from None
    from nightowl.errors import ConfigError

    raise ConfigError(
        f"unknown acceptance rule {spec!r}; use unanimity:N, majority:N:TAU, "
        "sequential:N:TAU or margin:THRESHOLD"
    )
