"""Voting rules: the student samples ``n`` answers and acts when enough of them agree.

`Unanimity`, `Majority` and `Sequential` (registered in `nightowl.distill.rules`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from nightowl.distill.acceptance import (
    AcceptanceRule,
    Draw,
    Rules,
    Simulated,
    Verdict,
    recorded,
    share_verdict,
    tally,
)

if TYPE_CHECKING:
    import numpy as np

    from nightowl.config import Prices
    from nightowl.distill.calibrate import CalibrateOptions, StateRecord


def _probs(logps: np.ndarray, temperature: float) -> np.ndarray:
    import numpy as np

    z = logps / max(temperature, 1e-6)
    z = z - z.max()
    p = np.exp(z)
    return p / p.sum()


class _Voting(AcceptanceRule):
    """A rule over ``n`` sampled answers whose top one needs ``need`` votes."""

    n: int
    need: int
    #: draws until the verdict is certain, one call at a time (else one batch of ``n``)
    sequential = False
    #: the reason's word when accepted
    verb = "vote"

    async def judge(self, draw: Draw) -> Verdict:
        """One batch of ``n``; accept iff the top answer has ``need`` votes."""
        answers = (await draw(self.n))[: self.n]
        return share_verdict(answers, self.n, self.need, self.verb)

    def simulate(
        self, rec: StateRecord, rng: np.random.Generator, draws: int, temperature: float
    ) -> Simulated:
        """Exact when all ``n`` must agree in one batch, else Monte Carlo."""
        import numpy as np

        _, lp, exp_i = recorded(rec)
        n, need = self.n, self.need
        # voting rules sample: from the summed log-probabilities, as the backend's choices do
        p = _probs(np.array(rec.sample_logprobs, dtype=np.float64)
                   if rec.sample_logprobs is not None else lp, temperature)
        if need == n and not self.sequential:
            acc = float(np.sum(p**n))
            right = float(p[exp_i] ** n) if exp_i >= 0 else 0.0
            return acc, acc - right, float(n)
        picks = rng.choice(len(p), size=(draws, n), p=p)
        acc_n = wrong_n = 0
        samples = 0.0
        for row in picks:
            counts: dict[int, int] = {}
            for j, a in enumerate(row, start=1):
                counts[a] = counts.get(a, 0) + 1
                top_a, top = max(counts.items(), key=lambda kv: kv[1])
                # sequential: stop once agreement is certain or impossible
                if self.sequential and (top >= need or top + (n - j) < need):
                    break
            samples += j
            if top >= need:
                acc_n += 1
                wrong_n += int(top_a != exp_i)
        return acc_n / draws, wrong_n / draws, samples / draws


class Unanimity(_Voting):
    """All ``n`` samples (drawn in one batch) must agree."""

    kinds = ("unanimity", "unanimous", "all")
    syntax = ("unanimity:N",)
    verb = "unanimous"

    def __init__(self, n: int = 3) -> None:
        if n < 1:
            raise ValueError("n must be >= 1")
        self.n = self.need = n
        self.name = f"unanimity(n={n})"

    @classmethod
    def parse(cls, kind: str, args: list[str]) -> Unanimity:
        """``unanimity[:N]`` (N=3)."""
        return cls(int(args[0]) if args else 3)

    def spec(self) -> str:
        """``unanimity:N``."""
        return f"unanimity:{self.n}"

    @classmethod
    def candidates(cls, opts: CalibrateOptions, states: Sequence[StateRecord], n: int) -> Rules:
        """Every N."""
        return [cls(n)]

    def describe(self) -> dict[str, Any]:
        """Parameters."""
        return {"rule": "unanimity", "n": self.n}


class Majority(_Voting):
    """The top answer of ``n`` samples (one batch) needs a share >= ``tau``."""

    kinds = ("majority",)
    syntax = ("majority:N:TAU",)
    verb = "majority"

    def __init__(self, n: int = 5, tau: float = 0.6) -> None:
        if n < 1 or not 0 < tau <= 1:
            raise ValueError("need n >= 1 and 0 < tau <= 1")
        self.n = n
        self.tau = tau
        self.need = math.ceil(tau * n - 1e-9)
        self.name = f"majority(n={n},tau={tau:g})"

    @classmethod
    def parse(cls, kind: str, args: list[str]) -> Majority:
        """``majority[:N[:TAU]]`` (5, 0.6)."""
        return cls(int(args[0]) if args else 5, float(args[1]) if len(args) > 1 else 0.6)

    def spec(self) -> str:
        """``majority:N:TAU``."""
        return f"majority:{self.n}:{self.tau:g}"

    @classmethod
    def candidates(cls, opts: CalibrateOptions, states: Sequence[StateRecord], n: int) -> Rules:
        """N >= 3 at every TAU < 1 (TAU = 1 is unanimity)."""
        return [cls(n, tau) for tau in opts.taus if tau < 1.0 and n >= 3]

    def describe(self) -> dict[str, Any]:
        """Parameters."""
        return {"rule": "majority", "n": self.n, "tau": self.tau}


class Sequential(_Voting):
    """Majority(n, tau) decided with as few samples as possible.

    Draws ``batch`` samples at a time; stops when the top answer has ``ceil(tau*n)``
    votes (accept) or no answer can reach that with the samples left (escalate).
    ``tau=1`` is sequential unanimity: it stops at the first disagreement.
    """

    kinds = ("sequential", "seq")
    syntax = ("sequential:N:TAU",)
    sequential = True

    def __init__(self, n: int = 5, tau: float = 1.0, batch: int = 1) -> None:
        if n < 1 or not 0 < tau <= 1 or batch < 1:
            raise ValueError("need n >= 1, 0 < tau <= 1, batch >= 1")
        self.n = n
        self.tau = tau
        self.batch = batch
        self.need = math.ceil(tau * n - 1e-9)
        self.name = f"sequential(n={n},tau={tau:g})"

    @classmethod
    def parse(cls, kind: str, args: list[str]) -> Sequential:
        """``sequential[:N[:TAU[:BATCH]]]`` (5, 1.0, 1)."""
        return cls(int(args[0]) if args else 5, float(args[1]) if len(args) > 1 else 1.0,
                   int(args[2]) if len(args) > 2 else 1)

    def spec(self) -> str:
        """``sequential:N:TAU`` (``:BATCH`` when not 1)."""
        return f"sequential:{self.n}:{self.tau:g}" + (f":{self.batch}" if self.batch > 1 else "")

    @classmethod
    def candidates(cls, opts: CalibrateOptions, states: Sequence[StateRecord], n: int) -> Rules:
        """N >= 2 at every TAU."""
        return [cls(n, tau) for tau in opts.taus] if n >= 2 else []

    async def judge(self, draw: Draw) -> Verdict:
        """Draw until agreement is certain or impossible."""
        answers: list[str | None] = []
        while len(answers) < self.n:
            k = min(self.batch, self.n - len(answers))
            answers.extend((await draw(k))[:k])
            cands = tally(answers)
            top = cands[0][1] if cands else 0.0
            certain = top >= self.need
            if certain or top + self.n - len(answers) < self.need:
                return Verdict(
                    action=cands[0][0] if certain else None,
                    confidence=top / len(answers),
                    samples=len(answers),
                    candidates=cands,
                    reason=f"agreement {'certain' if certain else 'impossible'} after "
                    f"{len(answers)}/{self.n}",
                )
        return share_verdict(answers, self.n, self.need, "sequential")  # pragma: no cover

    def student_cost(self, rec: StateRecord, drawn: float, prices: Prices) -> float:
        """One call per sample drawn."""
        return prices.cost(int(rec.prompt_tokens * drawn), 0, int(rec.choice_tokens * drawn))

    def describe(self) -> dict[str, Any]:
        """Parameters."""
        return {"rule": "sequential", "n": self.n, "tau": self.tau, "batch": self.batch}
