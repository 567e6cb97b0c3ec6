r"""Scoring the valid actions with the student: plain, length-normalised, calibrated.

The student tier scores every valid action once, log p(" action\\n" | prompt). How
those numbers rank the actions is a choice the benchmark makes (``bench/icd_matrix.py``):

- ``sum``: the summed log-probability (the model's own choice; the default),
- ``mean``: divided by the continuation's token count (long actions are not penalised
  for their length),
- ``calibrated``: minus the same action's summed log-probability after a content-free
  prompt (the same demos, goal and observation "N/A"): contextual calibration
  (Zhao et al., 2021) removes the model's prior preference for some action strings,
- ``calibrated-mean``: both.

`score_actions` does the model calls (one, or two for calibrated scoring: the
content-free prompt shares the real prompt's prefix, so prefix caching makes the second
call cheap); `rank_scores` is the pure part, reused by the benchmark and calibration.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nightowl.distill.prompt import continuation
from nightowl.llm.base import Usage


@dataclass(frozen=True, kw_only=True)
class ActionScores:
    """Scores of candidate actions: the ranked values and what they were made of."""

    scores: tuple[float, ...]
    raw: tuple[float, ...]
    token_counts: tuple[int, ...]
    content_free: tuple[float, ...] | None
    usage: Usage


def action_continuations(actions: Sequence[str]) -> list[str]:
    """What is scored per action: it continues ``Action:`` and ends with a newline."""
    return [continuation(a) + "\n" for a in actions]


def rank_scores(
    raw: Sequence[float],
    token_counts: Sequence[int],
    method: str,
    content_free: Sequence[float] | None = None,
) -> list[float]:
    """The values actions are ranked by, for one scoring method.

    Args:
        raw: summed log-probabilities after the real prompt.
        token_counts: tokens per continuation.
        method: "sum", "mean", "calibrated" or "calibrated-mean".
        content_free: summed log-probabilities after the content-free prompt (needed by
            the calibrated methods).

    Raises:
        ValueError: unknown method, or a calibrated method without content-free scores.
    """
    mean = method in ("mean", "calibrated-mean")
    calibrated = method in ("calibrated", "calibrated-mean")
    if method not in ("sum", "mean", "calibrated", "calibrated-mean"):
        raise ValueError(f"unknown scoring method {method!r}")
    if calibrated and content_free is None:
        raise ValueError(f"scoring {method!r} needs the content-free prompt's scores")
    out = [float(lp) for lp in raw]
    if calibrated:
        assert content_free is not None
        out = [v - float(content_free[i]) for i, v in enumerate(out)]
    if mean:
        out = [v / max(1, int(token_counts[i])) for i, v in enumerate(out)]
    return out


async def score_actions(
    model: Any,
    prompt: str,
    actions: Sequence[str],
    *,
    method: str = "sum",
    content_free_prompt: str | None = None,
) -> ActionScores:
    """Score ``actions`` after ``prompt`` with ``model.score_continuations``.

    Args:
        model: a backend (or metered backend) with ``score_continuations``.
        prompt: the student's prompt (ends with ``Action:``).
        actions: the candidate (valid) actions.
        method: the ranking method (`rank_scores`).
        content_free_prompt: `PromptBuilder.content_free` output; required by the
            calibrated methods.
    """
    conts = action_continuations(actions)
    scored = await model.score_continuations(prompt, conts)
    usage = scored.usage
    cf: tuple[float, ...] | None = None
    if method in ("calibrated", "calibrated-mean"):
        if content_free_prompt is None:
            raise ValueError(f"scoring {method!r} needs content_free_prompt")
        free = await model.score_continuations(content_free_prompt, conts)
        cf = tuple(float(x) for x in free.logprobs)
        usage = usage + free.usage
    values = rank_scores(scored.logprobs, scored.token_counts, method, cf)
    return ActionScores(
        scores=tuple(values),
        raw=tuple(float(x) for x in scored.logprobs),
        token_counts=tuple(int(c) for c in scored.token_counts),
        content_free=cf,
        usage=usage,
    )
