"""Hard budgets over named resources (steps, cost, teacher calls, tokens, tool calls).

A `Budget` holds a limit per resource (``None`` = unlimited) and what has been used.
`charge()` checks *every* amount first and raises `BudgetExceededError` before anything
is spent, so a budget is never exceeded: callers ask `can_afford()` with an upper bound
of what a call may cost (e.g. prompt tokens plus ``n * max_tokens`` at list prices), make
the call only if affordable, then `charge()` the actual amount (which is at most the
bound). `remaining_ratio()` is the fraction left of the *scarcest* limited resource,
which is what budget-aware search uses as ``r``.

The class is small and serialisable (`to_dict`/`from_dict`) so the agent loop can keep it
in checkpointed graph state. Other subsystems (BAVT) may add resources freely: any name
is accepted; the well-known ones are the constants below.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

from nightowl.errors import BudgetExceededError

#: well-known resource names (any other name works too)
STEPS = "steps"
COST_USD = "cost_usd"
TEACHER_CALLS = "teacher_calls"
TOKENS = "tokens"
TOOL_CALLS = "tool_calls"
#: wall seconds an episode's steps took (charged by the agent loop, up to the limit)
WALL_S = "wall_s"

#: tolerance for float resources (cost) so that rounding never trips a limit
_EPS = 1e-12

#: The step budget of an episode when none is given: the default of every command
#: (`run`, `collect`, `calibrate`'s dev rollouts, the demo's collection) and of the API
#: (`RunSpec`, `CollectRequest`, `EpisodeBudget`). An environment may declare its own
#: (`Environment.default_budget_steps`); the run plan (`nightowl.app.plan`) decides which.
DEFAULT_MAX_STEPS = 40
#: `nightowl demo`'s test episodes: short on purpose, so the showcase finishes in minutes
#: on 2 cores (docs/results.md measures it at this budget)
DEMO_MAX_STEPS = 15


class Budget:
    """Limits and usage over named resources; never exceeded.

    Args:
        limits: resource name -> limit (``None`` or ``math.inf`` = unlimited).
        used: optional starting usage (e.g. when resuming from a checkpoint).
        **kw_limits: limits as keyword arguments, e.g. ``Budget(steps=30, cost_usd=0.01)``.
    """

    def __init__(
        self,
        limits: Mapping[str, float | None] | None = None,
        *,
        used: Mapping[str, float] | None = None,
        **kw_limits: float | None,
    ) -> None:
        merged: dict[str, float | None] = {**(limits or {}), **kw_limits}
        self._limits: dict[str, float] = {}
        for name, lim in merged.items():
            if lim is None or (isinstance(lim, float) and math.isinf(lim)):
                continue
            if lim < 0:
                raise ValueError(f"budget limit for {name} must be >= 0, got {lim}")
            self._limits[name] = float(lim)
        self._used: dict[str, float] = {k: float(v) for k, v in (used or {}).items()}
        self._lock = threading.Lock()

    # --- queries ------------------------------------------------------------------
    @property
    def limits(self) -> dict[str, float]:
        """Limited resources and their limits (unlimited ones are absent)."""
        return dict(self._limits)

    @property
    def used(self) -> dict[str, float]:
        """Usage so far per resource (also for unlimited resources)."""
        return dict(self._used)

    def limit(self, name: str) -> float:
        """The limit of one resource (``inf`` when unlimited)."""
        return self._limits.get(name, math.inf)

    def used_of(self, name: str) -> float:
        """Usage of one resource."""
        return self._used.get(name, 0.0)

    def can_afford(self, **amounts: float) -> bool:
        """Whether charging all ``amounts`` together would stay within every limit."""
        with self._lock:
            return self._first_violation(amounts) is None

    def remaining(self, name: str) -> float:
        """Remaining amount of one resource (``inf`` if unlimited)."""
        with self._lock:
            return max(self.limit(name) - self.used_of(name), 0.0)

    def remaining_ratio(self) -> float:
        """Fraction left of the scarcest limited resource, in [0, 1]; 1.0 when unlimited."""
        with self._lock:
            return min((0.0 if lim <= 0 else max(0.0, min(1.0, (lim - self.used_of(k)) / lim))
                        for k, lim in self._limits.items()), default=1.0)

    def exhausted(self) -> str | None:
        """The name of a limited resource with nothing left, or None."""
        with self._lock:
            return next((k for k, lim in self._limits.items() if self.used_of(k) >= lim - _EPS),
                        None)

    # --- updates ------------------------------------------------------------------
    def charge(self, **amounts: float) -> None:
        """Spend ``amounts``; raises `BudgetExceededError` (spending nothing) if any overflows."""
        with self._lock:
            bad = self._first_violation(amounts)
            if bad is not None:
                raise BudgetExceededError(bad, self.limit(bad), self.used_of(bad) + amounts[bad])
            for k, v in amounts.items():
                self._used[k] = self.used_of(k) + float(v)

    def _first_violation(self, amounts: Mapping[str, float]) -> str | None:
        for k, v in amounts.items():
            if v < 0:
                raise ValueError(f"cannot charge a negative amount of {k}: {v}")
            lim = self._limits.get(k)
            if lim is not None and self.used_of(k) + v > lim + _EPS:
                return k
        return None

    # --- serialisation ------------------------------------------------------------
    def to_dict(self) -> dict[str, dict[str, float]]:
        """Plain data (for checkpointed graph state and the ledger)."""
        with self._lock:
            return {"limits": dict(self._limits), "used": dict(self._used)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, float]]) -> Budget:
        """Inverse of `to_dict`."""
        return cls(dict(data.get("limits", {})), used=dict(data.get("used", {})))

    def describe(self) -> str:
        """One line, e.g. ``steps 3/30, cost_usd 0.0012/0.05`` (for prompts and logs)."""
        with self._lock:
            return ", ".join(
                f"{k} {self.used_of(k):g}" + (f"/{self._limits[k]:g}" if k in self._limits else "")
                for k in sorted(self._limits.keys() | self._used.keys())
            )

    def __repr__(self) -> str:
        return f"Budget({self.describe()})"


class EpisodeBudget(BaseModel):
    """Per-episode limits as configuration (``None`` = unlimited).

    A budget that does not name ``max_steps`` has `DEFAULT_MAX_STEPS`; a run plan gives
    it the environment's default instead (`with_default_steps`), which is the same number
    unless the environment declares its own. Immutable (a run plan holds one).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_steps: int | None = Field(DEFAULT_MAX_STEPS, ge=1)
    max_cost_usd: float | None = Field(None, ge=0)
    max_teacher_calls: int | None = Field(None, ge=0)
    max_tokens: int | None = Field(None, ge=0)
    max_tool_calls: int | None = Field(None, ge=0)
    #: wall seconds of the episode's steps (resumes included), then it ends as a loss
    max_wall_s: float | None = Field(None, gt=0)

    def with_default_steps(self, steps: int) -> EpisodeBudget:
        """This budget, with ``max_steps=steps`` unless the caller set ``max_steps``.

        Set means given at all, to a number or to None (unlimited).
        """
        if "max_steps" in self.model_fields_set:
            return self
        return self.model_copy(update={"max_steps": steps})

    def make(self) -> Budget:
        """A fresh `Budget` with these limits."""
        return Budget(
            {
                STEPS: self.max_steps,
                COST_USD: self.max_cost_usd,
                TEACHER_CALLS: self.max_teacher_calls,
                TOKENS: self.max_tokens,
                TOOL_CALLS: self.max_tool_calls,
                WALL_S: self.max_wall_s,
            }
        )
