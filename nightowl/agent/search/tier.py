"""BAVT as a rung of the escalation ladder: search before the teacher is called.

Placed after the student tier: when the student's samples disagree, `BavtTier` searches
from the *current* state on clones of the live environment (with the student or a
mid-size model as proposer and residual critic), then acts with the first action of the
best path if its value reaches ``accept_value``; otherwise it escalates to the next tier
(usually the teacher) with its best candidate recorded. Environments that cannot clone
escalate at once with the reason recorded, so the ladder falls back to the next tier.

Budgets: each decision gets a *step* budget (``step_tokens`` / ``step_tool_calls``)
capped by what the *episode* budget (``ctx.budget``) has left; what the search used is
charged to the episode afterwards (`settle`), so neither is ever exceeded. The live
environment is restored to the state the search found it in.

Ledger: proposals are recorded under role "bavt", critic calls under "critic" (when the
models are `MeteredModel`s; both are bound to the step), environment steps made by the
search as tool calls ``bavt:<env>`` with the budget in their meta.
"""

from __future__ import annotations

import dataclasses
import math
import time
import zlib
from collections.abc import Callable
from typing import Any

from nightowl.agent.budget import COST_USD, TOKENS, TOOL_CALLS
from nightowl.agent.ladder import StepContext, Tier, TierDecision, TierParts, accept, escalate
from nightowl.agent.search.bavt import BavtConfig, BavtSearch, ToolCallHook
from nightowl.agent.search.space import SearchSpace
from nightowl.agent.search.step_budget import settle, sub_budget
from nightowl.config import Prices
from nightowl.errors import EnvError
from nightowl.ledger.metered import as_metered
from nightowl.llm.base import ModelBackend

DemoSource = str | Callable[[StepContext], str]


class BavtTier(Tier):
    """Budget-aware value tree search as a ladder tier.

    Args:
        model: proposer (the student or a mid-size model; a `MeteredModel` is recorded).
        config: search settings (the seed is mixed with task id and step).
        critic_model: residual critic (defaults to ``model``).
        step_tokens / step_tool_calls: the per-decision budget.
        accept_value: act when the best path's value reaches this; else escalate.
        accept_final_value: the bar for a *final* action (an answer ends the episode and
            cannot be taken back); defaults to the search's ``confident`` threshold.
        demos: worked examples for the prompt (a string, or a function of the context).
        ledger: where to record tool calls (defaults to ``model.ledger`` if metered).
        prices: the proposer's/critic's prices; with them the decision reports its cost
            and charges ``cost_usd``, and an episode cost limit caps the step's tokens
            (at the dearest per-token price, so the cost limit cannot be exceeded).
    """

    name = "bavt"
    actor = "bavt"

    def __init__(
        self,
        model: ModelBackend,
        *,
        config: BavtConfig | None = None,
        critic_model: ModelBackend | None = None,
        step_tokens: int = 6000,
        step_tool_calls: int = 12,
        accept_value: float = 0.6,
        accept_final_value: float | None = None,
        demos: DemoSource = "",
        ledger: Any = None,
        prices: Prices | None = None,
    ) -> None:
        self.prices = prices
        self.model = as_metered(model, role="bavt", prices=prices)
        self.critic_model = as_metered(critic_model or model, role="critic", prices=prices)
        self.config = config or BavtConfig()
        self.step_tokens = step_tokens
        self.step_tool_calls = step_tool_calls
        self.accept_value = accept_value
        self.accept_final_value = (
            self.config.confident if accept_final_value is None else accept_final_value
        )
        self.demos = demos
        self.ledger = ledger if ledger is not None else self.model.ledger

    def describe(self) -> dict[str, Any]:
        """Configuration for run records."""
        return {
            **super().describe(),
            "model": getattr(self.model, "name", "model"),
            "critic_model": getattr(self.critic_model, "name", "model"),
            "step_tokens": self.step_tokens,
            "step_tool_calls": self.step_tool_calls,
            "accept_value": self.accept_value,
            "accept_final_value": self.accept_final_value,
            "config": dataclasses.asdict(self.config),
        }

    # --- ledger wiring ------------------------------------------------------------------
    def _tool_hook(self, ctx: StepContext) -> ToolCallHook | None:
        ledger = self.ledger
        if ledger is None or not ctx.run_id:
            return None
        tool = f"bavt:{ctx.env_name or getattr(ctx.env, 'name', 'env')}"

        def hook(action: str, latency_s: float, meta: dict[str, Any]) -> None:
            kw: dict[str, Any] = {
                "run_id": ctx.run_id, "episode_id": ctx.episode_id or None, "step": ctx.step,
                "tool": tool, "latency_s": latency_s, "meta": {"action": action, **meta},
            }
            if ctx.pending is not None:
                ctx.pending.tool_call(ledger, **kw)
            else:
                ledger.record_tool_call(**kw)

        return hook

    # --- the decision -------------------------------------------------------------------
    async def decide(self, ctx: StepContext) -> TierDecision:
        """Search from the current state; accept the best path's first action or escalate."""
        t0 = time.perf_counter()
        env = ctx.env
        if env is None:
            return escalate(self.name, self.actor, "no environment to search (fallback)")
        if not getattr(env, "can_snapshot", False):
            return escalate(
                self.name, self.actor,
                f"environment {getattr(env, 'name', '?')!r} cannot snapshot/restore; "
                "falling back to the next tier",
                meta={"fallback": "cannot_clone"},
            )
        step_tokens = float(self.step_tokens)
        per_token = 0.0
        if self.prices is not None:
            per_token = max(self.prices.input, self.prices.cached_input, self.prices.output) / 1e6
            left_usd = ctx.budget.remaining(COST_USD)
            if per_token > 0 and not math.isinf(left_usd):
                step_tokens = min(step_tokens, math.floor(left_usd / per_token))
        budget = sub_budget(ctx.budget, **{TOKENS: step_tokens, TOOL_CALLS: self.step_tool_calls})
        if budget.exhausted() is not None:
            return escalate(self.name, self.actor, "budget",
                            meta={"exhausted": budget.exhausted()})
        demos = self.demos(ctx) if callable(self.demos) else self.demos
        try:
            space = SearchSpace.from_env(
                env, goal=ctx.goal, observation=ctx.observation,
                valid_actions=ctx.valid_actions, history=ctx.history, demos=demos,
            )
        except (NotImplementedError, ValueError, EnvError) as exc:
            return escalate(self.name, self.actor, f"cannot clone the environment: {exc}",
                            meta={"fallback": "cannot_clone"})
        seed = zlib.crc32(f"{self.config.seed}/{ctx.task_id}/{ctx.step}".encode())
        search = BavtSearch(
            self.model.bind(ctx.call_site("bavt")),
            dataclasses.replace(self.config, seed=seed),
            critic_model=self.critic_model.bind(ctx.call_site("critic")),
            on_tool_call=self._tool_hook(ctx),
        )
        try:
            result = await search.run(space, budget)
        except (NotImplementedError, EnvError) as exc:
            settle(ctx.budget, budget)
            return escalate(self.name, self.actor, f"search failed on the environment: {exc}",
                            meta={"fallback": "env_error", "budget": budget.to_dict()})
        settle(ctx.budget, budget)
        cost = 0.0
        if self.prices is not None:
            u = result.usage
            cost = self.prices.cost(u.prompt_tokens, u.cached_prompt_tokens, u.completion_tokens)
            # Bounded by construction (tokens <= remaining cost / dearest price).
            ctx.budget.charge(**{COST_USD: min(cost, ctx.budget.remaining(COST_USD))})
        meta = {
            "search_reason": result.reason,
            "value": result.value,
            "terminal": result.terminal,
            "path": list(result.actions),
            "stats": result.stats,
            "step_budget": budget.to_dict(),
            "tool_calls": result.tool_calls,
        }
        action = result.first_action
        common = {
            "samples": int(result.stats.get("expansions", 0)),
            "usage": result.usage,
            "cost_usd": cost,
            "latency_s": time.perf_counter() - t0,
            "meta": meta,
        }
        if action is None:
            return escalate(self.name, self.actor, f"search found no action ({result.reason})",
                            **common)
        candidates = ((action, result.value),)
        final = len(result.actions) == 1 and result.final is not None
        bar = self.accept_final_value if final else self.accept_value
        if result.value >= bar:
            return accept(
                self.name, self.actor, action, confidence=result.value,
                reason=f"bavt value {result.value:.2f} ({result.reason})",
                candidates=candidates, **common,
            )
        return escalate(
            self.name, self.actor,
            f"bavt value {result.value:.2f} < {bar:.2f}"
            f"{' for a final action' if final else ''} ({result.reason})",
            candidates=candidates, **common,
        )


def bavt_tier(parts: TierParts) -> BavtTier:
    """The ``bavt`` preset's search tier: the student proposes and criticises."""
    student = parts.student
    return BavtTier(student.with_role("bavt"), critic_model=student.with_role("critic"),
                    prices=parts.prices, ledger=parts.ledger)
