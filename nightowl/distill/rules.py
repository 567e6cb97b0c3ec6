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

from nightowl.distill._margins import DemoAgreement, LogprobMargin
from nightowl.distill._voting import Majority, Sequential, Unanimity
from nightowl.distill.acceptance import AcceptanceRule
from nightowl.errors import ConfigError

__all__ = ["RULES", "DemoAgreement", "LogprobMargin", "Majority", "Sequential", "Unanimity",
           "parse_rule", "register", "rule_syntax"]

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
