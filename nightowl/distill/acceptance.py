"""What acceptance rules share: `Verdict`, tallies, ranking, the `AcceptanceRule` interface.

The rules, their registry and the one spec parser are `nightowl.distill.rules`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from nightowl.distill.parser import canonical_action, normalize_action

if TYPE_CHECKING:
    import numpy as np

    from nightowl.config import Prices
    from nightowl.distill.calibrate import CalibrateOptions, StateRecord

#: draws ``k`` more samples and returns their parsed answers (None = unparseable)
Draw = Callable[[int], Awaitable[list[str | None]]]
#: a simulated state: (P(accept), P(accept a wrong action), expected samples drawn)
Simulated = tuple[float, float, float]
#: calibration candidates of a rule
Rules = list["AcceptanceRule"]


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
    """Votes per answer, keyed by `canonical_action`; most votes first (ties: first seen)."""
    counts = Counter(k for a in answers if a is not None and (k := canonical_action(a)))
    return tuple((k, float(c)) for k, c in counts.most_common())


def share_verdict(
    answers: Sequence[str | None], total: int, need: int, label: str
) -> Verdict:
    """Accept the top answer of ``answers`` iff it has ``need`` votes (share of ``total``)."""
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


def recorded(rec: StateRecord) -> tuple[list[str], np.ndarray, int]:
    """(normalised actions, scores, the expert's index or -1) of a recorded dev state."""
    import numpy as np

    norm = [canonical_action(a) for a in rec.actions]
    lp = np.array(rec.logprobs, dtype=np.float64)
    expert = canonical_action(rec.expert)
    exp_i = norm.index(expert) if expert in norm else -1
    return norm, lp, exp_i


class AcceptanceRule:  # noqa: B024 - subclasses implement judge or judge_scores
    """One acceptance rule: its spec, a live decision and a simulated one.

    Live: `judge` decides from samples, `judge_scores` from scores of the valid actions
    (``uses_scores``). Recorded: `simulate` predicts the same decision on a dev state
    (`nightowl.distill.calibrate`) and `student_cost` bills it; `candidates` is the grid
    of this rule that calibration tries. `parse` / `spec` turn a ``--rule`` string into
    the rule and back. Register a subclass with `nightowl.distill.rules.register`.
    """

    name: str = "rule"
    #: spec heads this rule parses (`nightowl.distill.rules.parse_rule`), e.g. "unanimity"
    kinds: ClassVar[tuple[str, ...]] = ()
    #: its spec forms for help texts, e.g. "unanimity:N"
    syntax: ClassVar[tuple[str, ...]] = ()
    #: what the default `parse` converts the spec's arguments with, in order
    arg_types: ClassVar[tuple[Callable[[str], Any], ...]] = ()
    #: True: the rule needs `judge_scores` (log-probabilities of the valid actions)
    uses_scores: bool = False
    #: True: the rule needs ``demo_action=`` (the nearest demo step's mapped action)
    uses_demos: bool = False

    @classmethod
    def parse(cls, kind: str, args: list[str]) -> AcceptanceRule:
        """The rule of a spec head (one of `kinds`) and its ``:``-separated arguments.

        By default the constructor's positional arguments, converted by `arg_types`
        (missing ones keep the constructor's defaults, extra ones are ignored).
        """
        if not cls.arg_types:
            raise NotImplementedError(f"{cls.__name__} has no spec")
        return cls(*(convert(a) for convert, a in zip(cls.arg_types, args, strict=False)))

    def spec(self) -> str:
        """The ``--rule`` spec that parses back to this rule."""
        raise NotImplementedError(f"{self.name} has no spec")

    def label(self, temperature: float) -> str:
        """Its name in calibration tables (sampling rules add the temperature)."""
        return self.spec() if self.uses_scores else f"{self.spec()} @T={temperature:g}"

    @classmethod
    def candidates(cls, opts: CalibrateOptions, states: Sequence[StateRecord], n: int) -> Rules:
        """This rule's candidates in calibration (none unless a rule says).

        Sampling rules are asked for every N of ``opts.ns`` at every temperature; score
        rules once, with ``n=1``.
        """
        return []

    async def judge(self, draw: Draw) -> Verdict:
        """Decide a live step from samples drawn with ``draw``."""
        raise NotImplementedError(f"{self.name} judges scores, not samples")

    def judge_scores(
        self,
        actions: Sequence[str],
        logprobs: Sequence[float],
        *,
        demo_action: str | None = None,
    ) -> Verdict:
        """Decide a live step from scores of candidate actions (and the demo's action)."""
        raise NotImplementedError(f"{self.name} judges samples, not scores")

    def simulate(
        self, rec: StateRecord, rng: np.random.Generator, draws: int, temperature: float
    ) -> Simulated:
        """(P(accept), P(accept a wrong action), expected samples) at a recorded state.

        Monte Carlo rules use ``draws`` rows of ``rng``; sampling rules sample at
        ``temperature``.
        """
        raise NotImplementedError(f"{self.name} cannot be simulated")

    def student_cost(self, rec: StateRecord, drawn: float, prices: Prices) -> float:
        """The student's bill at a recorded state: one call drawing ``drawn`` answers."""
        return prices.cost(int(rec.prompt_tokens * 1.0), 0, int(rec.choice_tokens * drawn))

    def describe(self) -> dict[str, Any]:
        """Parameters, for run records."""
        return {"rule": self.name}
