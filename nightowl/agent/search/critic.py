"""The residual critic: how much progress did one step make relative to its parent?

BAVT does not ask the model for the absolute quality of a state (small models are poorly
calibrated at that); it asks for the *change* a step made, and accumulates it:
``V(child) = clip(V(parent) + delta)``. Two ways to get ``delta``:

- ``"score"``: `score_continuations` over a small verbal scale (" worse", " same",
  " better", " solved"); ``delta`` is the probability-weighted mean of the scale's values.
  No parsing, so no malformed output — the robust choice for a 135M model.
- ``"generate"``: the model writes a number in [-1, 1] (scaled by `DELTA_SCALE`); the
  first number in the reply is used; anything unparseable gives ``delta = 0`` and is
  recorded as malformed, never raised.

``"auto"`` uses scoring when the backend supports it and falls back to generation.
Every call is bounded by the budget before it is made; a call the budget cannot afford
is not made (``delta = 0``, recorded as ``"budget"``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from nightowl.agent.budget import TOKENS, Budget
from nightowl.agent.search._tree import softmax
from nightowl.agent.search.step_budget import CallMeter, scoring_bound
from nightowl.errors import BackendUnavailableError, ModelError
from nightowl.llm.base import GenerationRequest, ModelBackend, Usage

CriticMode = Literal["auto", "score", "generate"]

#: the verbal scale: (continuation, delta)
SCALE: tuple[tuple[str, float], ...] = (
    (" worse", -0.25),
    (" same", 0.0),
    (" better", 0.2),
    (" solved", 0.4),
)

#: maps a generated number in [-1, 1] to a delta ("generate" mode)
DELTA_SCALE = 0.4
#: generation cap in "generate" mode
MAX_TOKENS = 6

_NUMBER = re.compile(r"[-+]?\d*\.?\d+")

CRITIC_QUESTION = (
    "Compared with before this step, is the agent now closer to the goal? "
    "Reply worse, same, better or solved."
)
CRITIC_NUMBER_QUESTION = (
    "Rate the progress this step made toward the goal, from -1 (worse) to 1 (solved). "
    "Reply with one number."
)


@dataclass(frozen=True, kw_only=True)
class CriticVerdict:
    """One critic call's result.

    Attributes:
        delta: value change in [-1, 1] (0 when malformed or unaffordable).
        status: "ok", "malformed", "error" or "budget".
        raw: the generated text or the scale distribution, for the trace.
        usage: tokens billed.
    """

    delta: float
    status: str = "ok"
    raw: Any = None
    usage: Usage = field(default_factory=Usage)


class ResidualCritic:
    """Scores the progress of a step relative to its parent.

    Args:
        model: the critic model (usually the acting model itself, via the ledger).
        mode: "auto", "score" or "generate".
    """

    def __init__(self, model: ModelBackend, *, mode: CriticMode = "auto") -> None:
        self.model = model
        self._can_score: bool | None = None if mode == "auto" else mode == "score"

    async def judge(self, prompt: str, budget: Budget) -> CriticVerdict:
        """Ask for the delta of the step described at the end of ``prompt``."""
        if self._can_score is not False:
            verdict = await self._score(prompt, budget)
            if verdict is not None:
                return verdict
        return await self._generate_number(prompt, budget)

    async def _score(self, prompt: str, budget: Budget) -> CriticVerdict | None:
        text = f"{prompt}\n{CRITIC_QUESTION}\nAnswer:"
        options = [s for s, _ in SCALE]
        bound = scoring_bound(self.model, text, options)
        if not budget.can_afford(**{TOKENS: bound}):
            return CriticVerdict(delta=0.0, status="budget")
        try:
            scored = await self.model.score_continuations(text, options)
        except NotImplementedError:
            self._can_score = False
            return None
        except BackendUnavailableError:
            raise  # infrastructure, not a verdict: the run stops (graph)
        except (ModelError, ValueError, RuntimeError) as exc:
            return CriticVerdict(delta=0.0, status="error", raw=str(exc))
        self._can_score = True
        budget.charge(**{TOKENS: min(scored.usage.total_tokens, bound)})
        lps = list(scored.logprobs)
        if len(lps) != len(options) or not all(math.isfinite(x) for x in lps):
            return CriticVerdict(delta=0.0, status="malformed", raw=lps, usage=scored.usage)
        probs = softmax(lps)
        delta = sum(p * v for p, (_, v) in zip(probs, SCALE, strict=True))
        dist = {s.strip(): round(p, 4) for (s, _), p in zip(SCALE, probs, strict=True)}
        return CriticVerdict(delta=delta, raw=dist, usage=scored.usage)

    async def _generate_number(self, prompt: str, budget: Budget) -> CriticVerdict:
        text = f"{prompt}\n{CRITIC_NUMBER_QUESTION}\nScore:"
        # bounded, charged and failing as every search call (a dead backend stops the run)
        res = await CallMeter(self.model).call(budget, GenerationRequest(
            prompt=text, n=1, max_tokens=MAX_TOKENS, temperature=0.0, stop=("\n",), seed=None
        ))
        if res is None:
            return CriticVerdict(delta=0.0, status="budget")
        if isinstance(res, ModelError):
            # A failed call may still have been billed by the server; without a usage
            # we charge nothing and record the failure.
            return CriticVerdict(delta=0.0, status="error", raw=str(res))
        raw = res.completions[0].text if res.completions else ""
        value = parse_delta(raw)
        if value is None:
            return CriticVerdict(delta=0.0, status="malformed", raw=raw, usage=res.usage)
        return CriticVerdict(delta=value * DELTA_SCALE, raw=raw, usage=res.usage)


def parse_delta(text: str) -> float | None:
    """The first number in ``text`` clipped to [-1, 1], or None if there is none."""
    m = _NUMBER.search(text or "")
    if m is None:
        return None
    x = float(m.group(0))
    if not math.isfinite(x):
        return None
    return max(-1.0, min(1.0, x))
