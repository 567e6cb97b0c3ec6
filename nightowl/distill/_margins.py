"""Score rules: the student scores every valid action once and acts on the top one.

`LogprobMargin` and `DemoAgreement` (registered in `nightowl.distill.rules`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from nightowl.distill.acceptance import (
    AcceptanceRule,
    Rules,
    Simulated,
    Verdict,
    rank_actions,
    recorded,
)
from nightowl.distill.parser import normalize_action

if TYPE_CHECKING:
    import numpy as np

    from nightowl.config import Prices
    from nightowl.distill.calibrate import CalibrateOptions, StateRecord


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

    def __init__(self, threshold: float = 1.0) -> None:
        self.threshold = float(threshold)
        self.name = f"margin(>={threshold:g})"

    @classmethod
    def parse(cls, kind: str, args: list[str]) -> LogprobMargin:
        """``margin[:T]`` (1.0)."""
        return cls(float(args[0]) if args else 1.0)

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
