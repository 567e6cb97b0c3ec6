"""Acceptance rules: when does the student act on its own samples? One registry.

Each rule is one object (`nightowl.distill.acceptance.AcceptanceRule`) that parses
from and prints as a ``--rule`` spec, decides a live step (`judge` / `judge_scores`,
the student tier) and simulates a recorded dev state (`simulate`, `nightowl calibrate`).
`RULES` is the registry (its order is calibration's candidate order); `register` adds
a rule; `parse_rule` is the only parser of specs; `rule_syntax` is the help text.
The rules live in ``distill``, below the agent, because calibration uses them too.

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
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from nightowl.distill.acceptance import (
    AcceptanceRule,
    Draw,
    Rules,
    Simulated,
    Verdict,
    rank_actions,
    recorded,
    share_verdict,
    tally,
)
from nightowl.distill.parser import normalize_action
from nightowl.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

    from nightowl.config import Prices
    from nightowl.distill.calibrate import CalibrateOptions, StateRecord

__all__ = ["RULES", "DemoAgreement", "LogprobMargin", "Majority", "Sequential", "Unanimity",
           "parse_rule", "register", "rule_syntax"]


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
    arg_types = (int,)
    verb = "unanimous"

    def __init__(self, n: int = 3) -> None:
        if n < 1:
            raise ValueError("n must be >= 1")
        self.n = self.need = n
        self.name = f"unanimity(n={n})"

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
    arg_types = (int, float)
    verb = "majority"

    def __init__(self, n: int = 5, tau: float = 0.6) -> None:
        if n < 1 or not 0 < tau <= 1:
            raise ValueError("need n >= 1 and 0 < tau <= 1")
        self.n = n
        self.tau = tau
        self.need = math.ceil(tau * n - 1e-9)
        self.name = f"majority(n={n},tau={tau:g})"

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
    arg_types = (int, float, int)
    sequential = True

    def __init__(self, n: int = 5, tau: float = 1.0, batch: int = 1) -> None:
        if n < 1 or not 0 < tau <= 1 or batch < 1:
            raise ValueError("need n >= 1, 0 < tau <= 1, batch >= 1")
        self.n = n
        self.tau = tau
        self.batch = batch
        self.need = math.ceil(tau * n - 1e-9)
        self.name = f"sequential(n={n},tau={tau:g})"

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
        while True:  # with all n drawn, agreement is certain or impossible
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

    def student_cost(self, rec: StateRecord, drawn: float, prices: Prices) -> float:
        """One call per sample drawn."""
        return prices.cost(int(rec.prompt_tokens * drawn), 0, int(rec.choice_tokens * drawn))

    def describe(self) -> dict[str, Any]:
        """Parameters."""
        return {"rule": "sequential", "n": self.n, "tau": self.tau, "batch": self.batch}


class _Scored(AcceptanceRule):
    """A rule over one scoring pass: the top action's margin and the demo's agreement."""

    uses_scores = True

    def accepts(self, margin: float, agree: bool) -> bool:
        """Whether a top-1 minus top-2 ``margin`` (and the demo's agreement) accepts."""
        raise NotImplementedError

    def why(self, margin: float, ok: bool, agree: bool, demo_action: str | None) -> str:
        """The verdict's reason."""
        raise NotImplementedError

    def judge_scores(
        self,
        actions: Sequence[str],
        logprobs: Sequence[float],
        *,
        demo_action: str | None = None,
    ) -> Verdict:
        """Rank actions by score; accept the top one by its margin (and the demo's action)."""
        ranked = rank_actions(actions, logprobs)
        if ranked is None:
            return Verdict(
                action=None, confidence=0.0, samples=1, candidates=(), reason="no scores"
            )
        top, margin, probs = ranked
        agree = demo_action is not None and normalize_action(demo_action) == top
        ok = self.accepts(margin, agree)
        return Verdict(
            action=top if ok else None,
            confidence=probs[0][1],
            samples=1,
            candidates=probs,
            reason=self.why(margin, ok, agree, demo_action),
        )

    def simulate(
        self, rec: StateRecord, rng: np.random.Generator, draws: int, temperature: float
    ) -> Simulated:
        """Exact: the rule is deterministic on the recorded scores."""
        import numpy as np

        norm, lp, exp_i = recorded(rec)
        order = np.argsort(-lp)
        m = lp[order[0]] - lp[order[1]] if len(lp) > 1 else math.inf
        demo = normalize_action(rec.demo_action) if rec.demo_action else None
        agree = demo is not None and demo == norm[int(order[0])]
        acc = float(self.accepts(m, agree))
        wrong = acc * float(order[0] != exp_i)
        return acc, wrong, 1.0

    def student_cost(self, rec: StateRecord, drawn: float, prices: Prices) -> float:
        """One pass scoring every valid action."""
        return prices.cost(rec.prompt_tokens + int(rec.choice_tokens * len(rec.actions)), 0, 0)


class LogprobMargin(_Scored):
    """Accept the top-scored action when log p(top1) - log p(top2) >= ``threshold``."""

    kinds = ("margin",)
    syntax = ("margin:T",)
    arg_types = (float,)

    def __init__(self, threshold: float = 1.0) -> None:
        self.threshold = float(threshold)
        self.name = f"margin(>={threshold:g})"

    def spec(self) -> str:
        """``margin:T``."""
        return f"margin:{self.threshold:g}"

    def label(self, temperature: float) -> str:
        """``margin>=T``."""
        return f"margin>={self.threshold:g}"

    @classmethod
    def candidates(cls, opts: CalibrateOptions, states: Sequence[StateRecord], n: int) -> Rules:
        """Every margin of ``opts``."""
        return [cls(m) for m in opts.margins]

    def accepts(self, margin: float, agree: bool) -> bool:
        """The margin reaches the threshold."""
        return bool(margin >= self.threshold)

    def why(self, margin: float, ok: bool, agree: bool, demo_action: str | None) -> str:
        """``margin M >= T`` (or ``<``)."""
        return f"margin {margin:.2f} {'>=' if ok else '<'} {self.threshold:g}"

    def describe(self) -> dict[str, Any]:
        """Parameters."""
        return {"rule": "margin", "threshold": self.threshold}


class DemoAgreement(_Scored):
    """Accept the top-scored action by agreement with the nearest demo step's action.

    Args:
        threshold: the margin threshold combined with agreement (None: agreement only).
        mode: "and" -- agree and margin >= threshold; "or" -- agree or margin >= threshold.
    """

    kinds = ("demo-agree", "demo", "margin+demo", "demo+margin", "margin|demo", "demo|margin")
    syntax = ("demo-agree", "margin+demo:T", "margin|demo:T")
    uses_demos = True

    def __init__(self, threshold: float | None = None, mode: str = "and") -> None:
        if mode not in ("and", "or"):
            raise ValueError("mode must be 'and' or 'or'")
        if mode == "or" and threshold is None:
            raise ValueError("margin|demo needs a threshold")
        self.threshold = None if threshold is None else float(threshold)
        self.mode = mode
        if threshold is None:
            self.name = "demo-agree"
        else:
            self.name = f"margin{'+' if mode == 'and' else '|'}demo(>={threshold:g})"

    @classmethod
    def parse(cls, kind: str, args: list[str]) -> DemoAgreement:
        """``demo-agree``, ``margin+demo[:T]`` (0.0) or ``margin|demo[:T]`` (3.0)."""
        if kind in ("demo-agree", "demo"):
            return cls(None)
        if "+" in kind:
            return cls(float(args[0]) if args else 0.0, "and")
        return cls(float(args[0]) if args else 3.0, "or")

    def spec(self) -> str:
        """``demo-agree``, ``margin+demo:T`` or ``margin|demo:T``."""
        if self.threshold is None:
            return "demo-agree"
        return f"margin{'+' if self.mode == 'and' else '|'}demo:{self.threshold:g}"

    def label(self, temperature: float) -> str:
        """``demo-agree`` or ``demo and|or margin>=T``."""
        if self.threshold is None:
            return "demo-agree"
        return f"demo {self.mode} margin>={self.threshold:g}"

    @classmethod
    def candidates(cls, opts: CalibrateOptions, states: Sequence[StateRecord], n: int) -> Rules:
        """Where demos were retrieved: agreement alone, then and/or every margin."""
        if not any(s.demo_action for s in states):
            return []
        return [cls(None), *(cls(m, mode) for m in opts.margins for mode in ("and", "or"))]

    def accepts(self, margin: float, agree: bool) -> bool:
        """Agreement, alone or with (and/or) the margin."""
        sure = self.threshold is not None and margin >= self.threshold
        if self.threshold is None:
            return agree
        return (agree and sure) if self.mode == "and" else (agree or sure)

    def why(self, margin: float, ok: bool, agree: bool, demo_action: str | None) -> str:
        """Whether the demo agrees (and the margin)."""
        why = "demo agrees" if agree else (
            "no demo action" if demo_action is None else f"demo did {demo_action!r}"
        )
        if self.threshold is not None:
            sure = margin >= self.threshold
            why += f", margin {margin:.2f} {'>=' if sure else '<'} {self.threshold:g}"
        return why

    def describe(self) -> dict[str, Any]:
        """Parameters."""
        return {"rule": "demo", "threshold": self.threshold, "mode": self.mode}


#: the registry, in calibration's candidate order
RULES: list[type[AcceptanceRule]] = [Unanimity, Majority, Sequential, LogprobMargin,
                                     DemoAgreement]


def register(rule: type[AcceptanceRule]) -> type[AcceptanceRule]:
    """Add a rule class to `RULES` (usable as a class decorator)."""
    taken = {k for r in RULES if r is not rule for k in r.kinds}
    if not rule.kinds or taken & set(rule.kinds):
        raise ValueError(f"{rule.__name__}: spec heads {rule.kinds} empty or taken")
    if rule not in RULES:
        RULES.append(rule)
    return rule


def rule_syntax(sep: str = " | ") -> str:
    """Every registered spec form, for help texts: ``unanimity:N | majority:N:TAU | ...``."""
    return sep.join(s for r in RULES for s in r.syntax)


def parse_rule(spec: str) -> AcceptanceRule:
    """The rule of a spec such as ``unanimity:3`` or ``margin|demo:3.0`` (`rule_syntax`).

    Raises:
        ConfigError: an unknown rule or bad arguments.
    """
    kind, *args = spec.strip().lower().split(":")
    rule = next((r for r in RULES if kind in r.kinds), None)
    if rule is None:
        raise ConfigError(f"unknown acceptance rule {spec!r}; use {rule_syntax(', ')}")
    try:
        return rule.parse(kind, args)
    except (ValueError, IndexError) as exc:
        raise ConfigError(f"bad acceptance rule {spec!r}: {exc}") from None
