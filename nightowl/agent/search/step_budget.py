"""Budget helpers for tree search: per-step sub-budgets, call reservations, prompt lines.

The hard budget itself is `nightowl.agent.budget.Budget` (generic over named resources,
never exceeded). Search adds three things on top of it:

- `sub_budget`: a per-step budget whose limits are the step limits *capped by what the
  episode has left*, so spending within the step can never overspend the episode;
  `settle` charges the episode with what the step used.
- `generation_bound` / `scoring_bound`: an upper bound on what one model call may cost
  in tokens (prompt tokens by the model's tokenizer when it has one, else a byte count,
  which bounds any byte-level BPE; plus ``n * max_tokens``), checked with `can_afford`
  *before* the call.
- `budget_line`: the remaining/used line shown to the model in its prompt.
- `CallMeter`: makes a model call only when its bound is affordable, charges the actual
  tokens, and accumulates usage.
"""

from __future__ import annotations

import math

from nightowl.agent.budget import TOKENS, TOOL_CALLS, Budget
from nightowl.errors import BackendUnavailableError, ModelError
from nightowl.llm.base import GenerationRequest, GenerationResult, ModelBackend, Usage

#: special tokens a chat template or BOS may add around a raw prompt
_SPECIAL_TOKEN_SLACK = 8


def count_prompt_tokens(model: ModelBackend, text: str) -> int:
    """Tokens of ``text`` by the model's tokenizer, or an upper bound (UTF-8 bytes)."""
    try:
        return int(model.count_tokens(text)) + _SPECIAL_TOKEN_SLACK
    except NotImplementedError:
        return len(text.encode("utf-8")) + _SPECIAL_TOKEN_SLACK


def generation_bound(model: ModelBackend, prompt: str, *, n: int, max_tokens: int) -> int:
    """Tokens a `generate` call may cost (prompt counted once, as hosted APIs bill ``n``)."""
    return count_prompt_tokens(model, prompt) + n * max_tokens


def scoring_bound(model: ModelBackend, prompt: str, continuations: list[str]) -> int:
    """Tokens `score_continuations` may cost: the prompt once per continuation, plus each.

    Backends that reuse the prompt's KV cache bill less; the bound must hold for those
    that do not.
    """
    p = count_prompt_tokens(model, prompt)
    return p * len(continuations) + sum(count_prompt_tokens(model, c) for c in continuations)


def sub_budget(parent: Budget, **limits: float | None) -> Budget:
    """A step budget: each limit capped by what ``parent`` has left of that resource."""
    capped = {name: min(math.inf if lim is None else float(lim), parent.remaining(name))
              for name, lim in limits.items()}
    capped |= {name: parent.remaining(name) for name in parent.limits
               if name not in capped and name in (TOKENS, TOOL_CALLS)}
    return Budget(capped)


def settle(parent: Budget, child: Budget, names: tuple[str, ...] = (TOKENS, TOOL_CALLS)) -> None:
    """Charge ``parent`` with what ``child`` used of ``names`` (affordable by construction)."""
    amounts = {n: child.used_of(n) for n in names if child.used_of(n) > 0}
    if amounts:
        parent.charge(**amounts)


def budget_line(budget: Budget) -> str:
    """What the model sees, e.g. ``Budget: tool calls 2/8 used, 6 left; tokens 900/4000 ...``."""
    parts = []
    for name, label in ((TOOL_CALLS, "tool calls"), (TOKENS, "tokens")):
        lim = budget.limit(name)
        used = budget.used_of(name)
        if math.isinf(lim):
            parts.append(f"{label} {used:g} used")
        else:
            parts.append(f"{label} {used:g}/{lim:g} used, {max(lim - used, 0):g} left")
    return "Budget: " + "; ".join(parts)


class CallMeter:
    """Calls the model within the budget and accumulates usage."""

    def __init__(self, model: ModelBackend) -> None:
        self.model = model
        self.usage = Usage()

    async def call(
        self, budget: Budget, request: GenerationRequest
    ) -> GenerationResult | None | ModelError:
        """Generate if affordable (None if not); failures come back as the error."""
        prompt = request.prompt or ""
        bound = generation_bound(self.model, prompt, n=request.n, max_tokens=request.max_tokens)
        if not budget.can_afford(**{TOKENS: bound}):
            return None
        try:
            res = await self.model.generate(request)
        except BackendUnavailableError:
            raise  # infrastructure, not a failed expansion: the run stops (graph)
        except (ModelError, ValueError, RuntimeError) as exc:
            return exc if isinstance(exc, ModelError) else ModelError(str(exc))
        self.usage = self.usage + res.usage
        # Bounded by construction; min() guards a backend that over-reports.
        budget.charge(**{TOKENS: min(res.usage.total_tokens, bound)})
        return res
