"""Concrete ladder tiers: the sampled student, an LLM teacher, and the oracle teacher.

- `StudentTier`: builds the completion prompt (demos + bounded history + valid actions),
  draws samples (constrained to the valid actions with ``choices=`` when the environment
  lists them, else free text through the parser) or scores the valid actions once, and
  applies its acceptance rule. It escalates on disagreement, on unparseable output, on
  model errors, and when the budget cannot cover the worst case of its next call.
- `TeacherTier`: any model as teacher (one greedy sample, retried once on errors).
- `OracleTier`: the environment's expert answers from the current state; it is billed
  as the prompt a teacher LLM would have received (same prompt builder, counted with a
  real tokenizer) plus a fixed output length, at the teacher's prices.

Every paid call goes through a `MeteredModel` (or the ledger directly for the oracle),
so the ledger sees it; the tier charges the episode budget with the actual cost after
checking an upper bound first, so the budget is never exceeded.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import re
import time
from typing import Any

from nightowl.agent.acceptance import AcceptanceRule, Verdict
from nightowl.agent.budget import COST_USD, TEACHER_CALLS, TOKENS, Budget
from nightowl.agent.ladder import StepContext, Tier, TierDecision, accept, escalate
from nightowl.config import Prices
from nightowl.distill.parser import normalize_action, parse_action
from nightowl.distill.prompt import PromptBuilder, continuation
from nightowl.llm.base import GenerationRequest, GenerationResult, Usage


class _BudgetStop(Exception):
    """Raised inside a draw when the next call cannot be afforded."""


def _accepts_kw(fn: Any, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def call_kwargs(fn: Any, ctx: StepContext, role: str | None = None) -> dict[str, Any]:
    """Ledger keywords (episode, step, role) for a metered model method that takes them."""
    kw: dict[str, Any] = {}
    if _accepts_kw(fn, "episode_id"):
        kw["episode_id"] = ctx.episode_id
    if _accepts_kw(fn, "step"):
        kw["step"] = ctx.step
    if role is not None and _accepts_kw(fn, "role"):
        kw["role"] = role
    return kw


def count_tokens(model: Any, text: str) -> int:
    """Tokens by the model's tokenizer; a conservative estimate when it has none."""
    try:
        return int(model.count_tokens(text))
    except (NotImplementedError, AttributeError):
        return max(1, len(text) // 3)


def _seed(ctx: StepContext, salt: int) -> int:
    h = hashlib.blake2b(f"{ctx.task_id}|{ctx.step}|{salt}".encode(), digest_size=4).digest()
    return int.from_bytes(h, "big")


def _afford(budget: Budget, cost: float, tokens: int, teacher_calls: int = 0) -> bool:
    amounts: dict[str, float] = {COST_USD: cost, TOKENS: tokens}
    if teacher_calls:
        amounts[TEACHER_CALLS] = teacher_calls
    return budget.can_afford(**amounts)


def _charge(budget: Budget, cost: float, tokens: int, teacher_calls: int = 0) -> None:
    amounts: dict[str, float] = {COST_USD: cost, TOKENS: tokens}
    if teacher_calls:
        amounts[TEACHER_CALLS] = teacher_calls
    budget.charge(**amounts)


def repeats_without_progress(ctx: StepContext, action: str) -> bool:
    """Whether ``action`` was already taken in an identical observation this episode.

    A confident student can loop ("look around" forever); acting the same way in the
    same state again is not progress, so a cascade escalates instead of accepting.
    """
    obs = _state_key(ctx.observation)
    act = normalize_action(action)
    return any(_state_key(o) == obs and normalize_action(a) == act for o, a in ctx.history)


def _state_key(observation: str) -> str:
    """Observation text with whitespace collapsed and numbers masked.

    Move counters and scores change on every step without the state changing.
    """
    return re.sub(r"\d+", "#", " ".join(observation.split()))


class StudentTier(Tier):
    """The frozen student: samples + acceptance rule.

    Args:
        model: the student backend (ideally a `MeteredModel`, so calls hit the ledger).
        prices: the student's prices (for budget checks; the ledger prices calls too).
        rule: the acceptance rule.
        builder: the prompt builder.
        use_demos: put retrieved demos in the prompt.
        constrain: constrain samples to the valid actions (``choices=``) when known.
        temperature: sampling temperature for voting rules.
        max_tokens: generation cap per free-text sample.
        name: tier name.
    """

    actor = "student"

    def __init__(
        self,
        model: Any,
        *,
        prices: Prices,
        rule: AcceptanceRule,
        builder: PromptBuilder | None = None,
        use_demos: bool = True,
        constrain: bool = True,
        temperature: float = 0.7,
        max_tokens: int = 16,
        avoid_repeats: bool = False,
        name: str = "student",
    ) -> None:
        self.model = model
        self.prices = prices
        self.rule = rule
        self.builder = builder or PromptBuilder()
        self.use_demos = use_demos
        self.constrain = constrain
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.avoid_repeats = avoid_repeats
        self.name = name

    def describe(self) -> dict[str, Any]:
        """Configuration."""
        return {
            "name": self.name,
            "actor": self.actor,
            "model": getattr(self.model, "name", type(self.model).__name__),
            "rule": self.rule.describe(),
            "avoid_repeats": self.avoid_repeats,
            "use_demos": self.use_demos,
            "constrain": self.constrain,
            "temperature": self.temperature,
        }

    def prompt(self, ctx: StepContext) -> str:
        """The completion prompt for this step."""
        return self.builder.build(
            goal=ctx.goal,
            observation=ctx.observation,
            history=ctx.history,
            valid_actions=ctx.valid_actions,
            demos=ctx.demos if self.use_demos else (),
        )

    async def decide(self, ctx: StepContext) -> TierDecision:
        """Sample, vote (or score), accept or escalate."""
        started = time.perf_counter()
        prompt = self.prompt(ctx)
        ptoks = count_tokens(self.model, prompt)
        usage_box = [Usage()]
        cost_box = [0.0]
        raw: list[str] = []
        failures: list[str] = []
        valid = tuple(ctx.valid_actions) if ctx.valid_actions else None
        by_norm = {normalize_action(a): a for a in valid} if valid else {}
        calls = [0]

        def spend(usage: Usage) -> None:
            cost = self.prices.cost(
                usage.prompt_tokens, usage.cached_prompt_tokens, usage.completion_tokens
            )
            _charge(ctx.budget, cost, usage.total_tokens)
            usage_box[0] = usage_box[0] + usage
            cost_box[0] += cost

        async def generate(k: int, temperature: float) -> GenerationResult:
            # choices continue the prompt ("...Action:" + " take coin"), like the demos
            choices = tuple(continuation(a) for a in valid) if (self.constrain and valid) else None
            per = self.max_tokens
            if choices:
                per = max(per, max(count_tokens(self.model, c) for c in choices) + 2)
            bound_toks = ptoks + 8 + k * per
            bound = self.prices.cost(ptoks + 8, 0, k * per)
            if not _afford(ctx.budget, bound, bound_toks):
                raise _BudgetStop()
            req = GenerationRequest(
                prompt=prompt,
                n=k,
                max_tokens=self.max_tokens,
                temperature=temperature,
                stop=("\n",),
                seed=_seed(ctx, calls[0]) if temperature > 0 else None,
                choices=choices,
            )
            calls[0] += 1
            res: GenerationResult = await self.model.generate(
                req, **call_kwargs(self.model.generate, ctx)
            )
            spend(res.usage)
            return res

        async def draw(k: int) -> list[str | None]:
            res = await generate(k, self.temperature)
            out: list[str | None] = []
            for text in res.texts:
                raw.append(text)
                p = parse_action(text, valid)
                if p.action is None:
                    failures.append(text[:80])
                out.append(p.action)
            return out

        def finish(verdict: Verdict | None, reason: str | None = None) -> TierDecision:
            kw: dict[str, Any] = {
                "confidence": verdict.confidence if verdict else 0.0,
                "samples": verdict.samples if verdict else len(raw),
                "candidates": verdict.candidates if verdict else (),
                "usage": usage_box[0],
                "cost_usd": cost_box[0],
                "latency_s": time.perf_counter() - started,
                "meta": {
                    "prompt_tokens": ptoks,
                    "rule": self.rule.name,
                    "samples_raw": [r[:80] for r in raw[:8]],
                    "parse_failures": len(failures),
                    "calls": calls[0],
                },
            }
            if verdict is not None and verdict.accepted and reason is None:
                act = by_norm.get(verdict.action or "", verdict.action or "")
                if self.avoid_repeats and repeats_without_progress(ctx, act):
                    return escalate(
                        self.name, self.actor,
                        f"repeat without progress: {act!r} already taken here", **kw,
                    )
                return accept(self.name, self.actor, act, reason=verdict.reason, **kw)
            return escalate(
                self.name, self.actor, reason or (verdict.reason if verdict else "no verdict"), **kw
            )

        try:
            if self.rule.uses_scores:
                verdict = await self._score(ctx, prompt, ptoks, valid, draw, spend, calls)
            else:
                verdict = await self.rule.judge(draw)
        except _BudgetStop:
            return finish(None, "budget: cannot afford the student's next call")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # model errors never crash the episode
            return finish(None, f"model error: {type(exc).__name__}: {str(exc)[:160]}")
        return finish(verdict)

    async def _score(
        self,
        ctx: StepContext,
        prompt: str,
        ptoks: int,
        valid: tuple[str, ...] | None,
        draw: Any,
        spend: Any,
        calls: list[int],
    ) -> Verdict:
        if valid:
            actions = list(valid)
        else:  # no valid-action list: score the distinct free samples instead
            got = [a for a in await draw(3) if a]
            actions = list(dict.fromkeys(got))
            if not actions:
                return Verdict(
                    action=None, confidence=0.0, samples=3, candidates=(), reason="no parseable"
                )
        conts = [continuation(a) + "\n" for a in actions]  # the terminator ends the action
        ctoks = sum(count_tokens(self.model, c) for c in conts)
        bound_toks = ptoks + 8 + ctoks + 2 * len(conts)
        if not _afford(ctx.budget, self.prices.cost(bound_toks, 0, 0), bound_toks):
            raise _BudgetStop()
        fn = self.model.score_continuations
        calls[0] += 1
        scored = await fn(prompt, conts, **call_kwargs(fn, ctx))
        spend(scored.usage)
        return self.rule.judge_scores(actions, scored.logprobs)


class TeacherTier(Tier):
    """Any model as the teacher: one greedy answer, parsed; retried once on errors."""

    actor = "teacher"

    def __init__(
        self,
        model: Any,
        *,
        prices: Prices,
        builder: PromptBuilder | None = None,
        use_demos: bool = False,
        constrain: bool = True,
        max_tokens: int = 32,
        retries: int = 1,
        name: str = "teacher",
    ) -> None:
        self.model = model
        self.prices = prices
        self.builder = builder or PromptBuilder()
        self.use_demos = use_demos
        self.constrain = constrain
        self.max_tokens = max_tokens
        self.retries = retries
        self.name = name

    def describe(self) -> dict[str, Any]:
        """Configuration."""
        return {
            "name": self.name,
            "actor": self.actor,
            "model": getattr(self.model, "name", type(self.model).__name__),
        }

    async def decide(self, ctx: StepContext) -> TierDecision:
        """Ask the teacher once (plus retries on errors)."""
        started = time.perf_counter()
        valid = tuple(ctx.valid_actions) if ctx.valid_actions else None
        prompt = self.builder.build(
            goal=ctx.goal,
            observation=ctx.observation,
            history=ctx.history,
            valid_actions=valid,
            demos=ctx.demos if self.use_demos else (),
        )
        ptoks = count_tokens(self.model, prompt)
        bound_toks = ptoks + 8 + self.max_tokens
        bound = self.prices.cost(ptoks + 8, 0, self.max_tokens)
        usage = Usage()
        cost = 0.0
        errors: list[str] = []
        for _attempt in range(self.retries + 1):
            if not _afford(ctx.budget, bound, bound_toks, teacher_calls=1):
                return escalate(
                    self.name, self.actor, "budget: cannot afford a teacher call",
                    usage=usage, cost_usd=cost, meta={"errors": errors},
                )
            req = GenerationRequest(
                prompt=prompt,
                n=1,
                max_tokens=self.max_tokens,
                temperature=0.0,
                stop=("\n",),
                choices=(
                    tuple(continuation(a) for a in valid) if (self.constrain and valid) else None
                ),
            )
            try:
                res = await self.model.generate(req, **call_kwargs(self.model.generate, ctx))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {str(exc)[:120]}")
                # a failed call may or may not be billed upstream; count the attempt
                _charge(ctx.budget, 0.0, 0, teacher_calls=1)
                continue
            c = self.prices.cost(
                res.usage.prompt_tokens, res.usage.cached_prompt_tokens, res.usage.completion_tokens
            )
            _charge(ctx.budget, c, res.usage.total_tokens, teacher_calls=1)
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


class OracleTier(Tier):
    """The environment's expert as teacher, billed as a teacher LLM would be.

    Args:
        ledger: the cost ledger (None: not recorded, e.g. in unit tests).
        prices: the teacher's prices (``settings.teacher_price_model``).
        tokenizer: any object with ``count_tokens`` (a real tokenizer: the student's).
        output_tokens: billed completion tokens per step (reasoning + action).
        builder: the prompt builder the billed prompt is built with.
        use_demos: whether the billed teacher prompt includes the retrieved demos.
    """

    actor = "oracle"

    def __init__(
        self,
        *,
        ledger: Any,
        prices: Prices,
        tokenizer: Any,
        output_tokens: int = 60,
        builder: PromptBuilder | None = None,
        use_demos: bool = False,
        name: str = "teacher",
    ) -> None:
        self.ledger = ledger
        self.prices = prices
        self.tokenizer = tokenizer
        self.output_tokens = output_tokens
        self.builder = builder or PromptBuilder()
        self.use_demos = use_demos
        self.name = name

    def describe(self) -> dict[str, Any]:
        """Configuration."""
        return {
            "name": self.name,
            "actor": self.actor,
            "model": "oracle",
            "output_tokens": self.output_tokens,
            "prices": self.prices.model_dump(),
        }

    def billed_usage(self, ctx: StepContext) -> Usage:
        """The usage a teacher LLM would have been billed for this step."""
        prompt = self.builder.build(
            goal=ctx.goal,
            observation=ctx.observation,
            history=ctx.history,
            valid_actions=ctx.valid_actions,
            demos=ctx.demos if self.use_demos else (),
        )
        return Usage(
            prompt_tokens=count_tokens(self.tokenizer, prompt),
            completion_tokens=self.output_tokens,
        )

    async def decide(self, ctx: StepContext) -> TierDecision:
        """Ask the environment's expert from the current state."""
        started = time.perf_counter()
        env = ctx.env
        if env is None or not getattr(env, "has_expert", False):
            return escalate(self.name, self.actor, "no expert for this environment")
        usage = self.billed_usage(ctx)
        cost = self.prices.cost(usage.prompt_tokens, 0, usage.completion_tokens)
        if not _afford(ctx.budget, cost, usage.total_tokens, teacher_calls=1):
            return escalate(self.name, self.actor, "budget: cannot afford a teacher call")
        try:
            action = await asyncio.to_thread(env.expert_action)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return escalate(
                self.name, self.actor, f"teacher error: {type(exc).__name__}: {str(exc)[:120]}"
            )
        if not action:
            return escalate(self.name, self.actor, "no expert action from this state")
        latency = time.perf_counter() - started
        if self.ledger is not None:
            self.ledger.record_model_call(
                run_id=ctx.run_id,
                episode_id=ctx.episode_id,
                step=ctx.step,
                role="teacher",
                model=f"oracle:{ctx.env_name or getattr(env, 'name', 'env')}",
                usage=usage,
                latency_s=latency,
                prices=self.prices,
                meta={"oracle": True},
            )
        _charge(ctx.budget, cost, usage.total_tokens, teacher_calls=1)
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
