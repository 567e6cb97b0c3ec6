"""The teacher tier: any model as teacher (one greedy answer, retried once on errors)."""

from __future__ import annotations

import time
from typing import Any

from nightowl.agent.ladder import StepContext, Tier, TierDecision, accept, escalate
from nightowl.agent.tiers.common import build_prompt, can_afford, charge, count_tokens
from nightowl.config import Prices
from nightowl.distill.parser import normalize_action, parse_action
from nightowl.distill.prompt import PromptBuilder, continuation
from nightowl.errors import BackendUnavailableError
from nightowl.ledger.metered import as_metered
from nightowl.llm.base import GenerationRequest, ModelBackend, Usage


class TeacherTier(Tier):
    """Any model as the teacher: one greedy answer, parsed; retried once on errors.

    Its prompt has no demos; its answer is constrained to the valid actions when known.
    """

    name = "teacher"
    actor = "teacher"

    def __init__(
        self,
        model: ModelBackend,
        *,
        prices: Prices,
        builder: PromptBuilder | None = None,
        max_tokens: int = 32,
        retries: int = 1,
    ) -> None:
        self.model = as_metered(model, role="teacher", prices=prices)
        self.prices = prices
        self.builder = builder or PromptBuilder()
        # a code action takes more than a one-line command
        self.max_tokens = max(max_tokens, self.builder.sample_max_tokens)
        self.retries = retries

    def describe(self) -> dict[str, Any]:
        """Configuration."""
        return {
            **super().describe(),
            "model": getattr(self.model, "name", type(self.model).__name__),
        }

    async def decide(self, ctx: StepContext) -> TierDecision:
        """Ask the teacher once (plus retries on errors)."""
        started = time.perf_counter()
        valid = tuple(ctx.valid_actions) if ctx.valid_actions else None
        model = self.model.bind(ctx.call_site())
        prompt = build_prompt(self.builder, ctx, use_demos=False)
        ptoks = count_tokens(model, prompt)
        bound_toks = ptoks + 8 + self.max_tokens
        bound = self.prices.cost(ptoks + 8, 0, self.max_tokens)
        usage = Usage()
        cost = 0.0
        errors: list[str] = []
        for _attempt in range(self.retries + 1):
            if not can_afford(ctx.budget, bound, bound_toks, teacher_calls=1):
                return escalate(
                    self.name, self.actor, "budget: cannot afford a teacher call",
                    usage=usage, cost_usd=cost, meta={"errors": errors},
                )
            req = GenerationRequest(
                prompt=prompt,
                n=1,
                max_tokens=self.max_tokens,
                temperature=0.0,
                stop=self.builder.sample_stop,
                choices=tuple(continuation(a) for a in valid) if valid else None,
            )
            try:
                res = await model.generate(req)
            except BackendUnavailableError:
                raise  # a dead backend is an infrastructure error: the run stops (graph)
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {str(exc)[:120]}")
                # a failed call may or may not be billed upstream; count the attempt
                charge(ctx.budget, 0.0, 0, teacher_calls=1)
                continue
            c = self.prices.cost(
                res.usage.prompt_tokens, res.usage.cached_prompt_tokens, res.usage.completion_tokens
            )
            charge(ctx.budget, c, res.usage.total_tokens, teacher_calls=1)
            usage = usage + res.usage
            cost += c
            text = res.texts[0] if res.texts else ""
            p = parse_action(text, valid)
            kw = {
                "samples": 1,
                "usage": usage,
                "cost_usd": cost,
                "teacher_calls": 1 + len(errors),
                "latency_s": time.perf_counter() - started,
                "meta": {"raw": text[:120], "errors": errors},
            }
            if p.action is None:
                return escalate(self.name, self.actor, "teacher output unparseable", **kw)
            return accept(
                self.name, self.actor, p.action, confidence=1.0, reason="teacher",
                candidates=((normalize_action(p.action), 1.0),), **kw,
            )
        return escalate(
            self.name, self.actor, f"teacher error: {errors[-1] if errors else '?'}",
            usage=usage, cost_usd=cost, teacher_calls=len(errors),
            latency_s=time.perf_counter() - started, meta={"errors": errors},
        )
