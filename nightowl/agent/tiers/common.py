"""Helpers every tier shares: token counts, budget checks and charges, sample seeds."""

from __future__ import annotations

import hashlib
from typing import Any

from nightowl.agent.budget import COST_USD, TEACHER_CALLS, TOKENS, Budget
from nightowl.agent.ladder import StepContext
from nightowl.agent.state import visit_key


class BudgetStop(Exception):
    """Raised inside a draw when the next call cannot be afforded."""


def count_tokens(model: Any, text: str) -> int:
    """Tokens by the model's tokenizer; a conservative estimate when it has none."""
    try:
        return int(model.count_tokens(text))
    except (NotImplementedError, AttributeError):
        return max(1, len(text) // 3)


def sample_seed(ctx: StepContext, salt: int) -> int:
    """A seed fixed by task, step and call number (reruns draw the same samples)."""
    h = hashlib.blake2b(f"{ctx.task_id}|{ctx.step}|{salt}".encode(), digest_size=4).digest()
    return int.from_bytes(h, "big")


def _amounts(cost: float, tokens: int, teacher_calls: int) -> dict[str, float]:
    amounts: dict[str, float] = {COST_USD: cost, TOKENS: tokens}
    if teacher_calls:
        amounts[TEACHER_CALLS] = teacher_calls
    return amounts


def can_afford(budget: Budget, cost: float, tokens: int, teacher_calls: int = 0) -> bool:
    """Whether the budget covers ``cost`` USD, ``tokens`` and ``teacher_calls``."""
    return budget.can_afford(**_amounts(cost, tokens, teacher_calls))


def charge(budget: Budget, cost: float, tokens: int, teacher_calls: int = 0) -> None:
    """Charge the budget (after checking it with `can_afford`)."""
    budget.charge(**_amounts(cost, tokens, teacher_calls))


def repeats_without_progress(ctx: StepContext, action: str) -> bool:
    """Whether ``action`` was already taken in an identical observation this episode.

    A confident student can loop ("look around" forever, or a cycle of several moves);
    acting the same way in the same state again is not progress, so a cascade
    escalates instead of accepting. The loop's ``ctx.seen`` covers the whole episode;
    ``ctx.history`` (the last few steps) is checked too for contexts built without it.
    Both compare `visit_key`s (whitespace collapsed, move counters masked).
    """
    key = visit_key(ctx.observation, action)
    return key in ctx.seen or any(visit_key(o, a) == key for o, a in ctx.history)


def build_prompt(builder: Any, ctx: StepContext, *, use_demos: bool) -> str:
    """The completion prompt for ``ctx`` (demos only when ``use_demos``)."""
    return str(builder.build(
        goal=ctx.goal,
        observation=ctx.observation,
        history=ctx.history,
        valid_actions=ctx.valid_actions,
        demos=ctx.demos if use_demos else (),
    ))
