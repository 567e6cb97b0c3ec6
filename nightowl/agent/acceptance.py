"""The student tier's acceptance rules: `nightowl.distill.rules` (one registry).

A rule decides a live step here and simulates a recorded one in `nightowl calibrate`
with the same object, so the rules live in ``distill``, below the agent and calibration
both. This module keeps the agent's import path.
"""

from __future__ import annotations

from nightowl.distill.acceptance import AcceptanceRule, Draw, Verdict, rank_actions, tally
from nightowl.distill.rules import (
    RULES,
    DemoAgreement,
    LogprobMargin,
    Majority,
    Sequential,
    Unanimity,
    parse_rule,
    register,
    rule_syntax,
)

__all__ = ["RULES", "AcceptanceRule", "DemoAgreement", "Draw", "LogprobMargin", "Majority",
           "Sequential", "Unanimity", "Verdict", "parse_rule", "rank_actions", "register",
           "rule_syntax", "tally"]
