"""The oracle tier: the environment's expert as teacher, billed as a teacher LLM would be.

The bill is the prompt a teacher LLM would have received (same prompt builder, counted
with a real tokenizer: only ``count_tokens`` is called, no weights are needed) plus a
fixed output length, at the teacher's prices; it is recorded like any metered call.
"""

from __future__ import annotations

import time
from typing import Any

from nightowl.agent.ladder import StepContext, Tier, TierDecision, accept, escalate
from nightowl.agent.tiers.common import build_prompt, can_afford, charge, count_tokens
from nightowl.config import Prices
from nightowl.distill.parser import normalize_action
from nightowl.distill.prompt import PromptBuilder
from nightowl.ledger.metered import record_call
from nightowl.llm.base import Usage


class OracleTier(Tier):
    """The environment's expert as teacher, billed as a teacher LLM would be.

    Args:
        ledger: the cost ledger (None: not recorded, e.g. in unit tests).
        prices: the teacher's prices (``settings.teacher_price_model``).
        tokenizer: any object with ``count_tokens`` (a real tokenizer; only
            ``count_tokens`` is called, so no model weights need to be loaded).
        output_tokens: billed completion tokens per step (reasoning + action).
        builder: the prompt builder the billed prompt is built with (without demos).
    """

    name = "teacher"
    actor = "oracle"

    def __init__(
        self,
        *,
        ledger: Any,
        prices: Prices,
        tokenizer: Any,
        output_tokens: int = 60,
        builder: PromptBuilder | None = None,
    ) -> None:
        self.ledger = ledger
        self.prices = prices
        self.tokenizer = tokenizer
        self.output_tokens = output_tokens
        self.builder = builder or PromptBuilder()

    def describe(self) -> dict[str, Any]:
        """Configuration."""
        return {
            **super().describe(),
            "model": "oracle",
            "output_tokens": self.output_tokens,
            "prices": self.prices.model_dump(),
        }

    async def decide(self, ctx: StepContext) -> TierDecision:
        """Ask the environment's expert from the current state."""
        started = time.perf_counter()
        env = ctx.env
        if env is None or not getattr(env, "has_expert", False):
            return escalate(self.name, self.actor, "no expert for this environment")
        # the usage a teacher LLM would have been billed for this step
        prompt = build_prompt(self.builder, ctx, use_demos=False)
        usage = Usage(prompt_tokens=count_tokens(self.tokenizer, prompt),
                      completion_tokens=self.output_tokens)
        cost = self.prices.cost(usage.prompt_tokens, 0, usage.completion_tokens)
        if not can_afford(ctx.budget, cost, usage.total_tokens, teacher_calls=1):
            return escalate(self.name, self.actor, "budget: cannot afford a teacher call")
        try:
            action = await ctx.offload(env.expert_action)
        except Exception as exc:  # CancelledError is no Exception: it passes through
            return escalate(
                self.name, self.actor, f"teacher error: {type(exc).__name__}: {str(exc)[:120]}"
            )
        if not action:
            return escalate(self.name, self.actor, "no expert action from this state")
        latency = time.perf_counter() - started
        await record_call(
            self.ledger, ctx.call_site("teacher"), self.prices,
            model=f"oracle:{ctx.env_name or getattr(env, 'name', 'env')}",
            usage=usage, latency_s=latency, meta={"oracle": True},
        )
        charge(ctx.budget, cost, usage.total_tokens, teacher_calls=1)
        return accept(
            self.name,
            self.actor,
            action,
            confidence=1.0,
            reason="oracle",
            samples=1,
            candidates=((normalize_action(action), 1.0),),
            usage=usage,
            cost_usd=cost,
            teacher_calls=1,
            latency_s=latency,
        )
