"""The student tier: the frozen small model, sampled or scored, with an acceptance rule.

It builds the completion prompt (demos + bounded history + valid actions), draws samples
(constrained to the valid actions with ``choices=`` when the environment lists them,
else free text through the parser) or scores the valid actions once, and applies its
acceptance rule. It escalates on disagreement, on unparseable output, on model errors,
and when the budget cannot cover the worst case of its next call.
"""

from __future__ import annotations

import time
from typing import Any, Literal, get_args

from nightowl.agent.acceptance import AcceptanceRule, Verdict
from nightowl.agent.ladder import StepContext, Tier, TierDecision, accept, escalate
from nightowl.agent.tiers.common import (
    BudgetStop,
    build_prompt,
    can_afford,
    charge,
    count_tokens,
    repeats_without_progress,
    sample_seed,
)
from nightowl.config import Prices
from nightowl.distill.moves import without_walk_back
from nightowl.distill.parser import canonical_action, normalize_action, parse_action
from nightowl.distill.prompt import PromptBuilder, continuation
from nightowl.distill.scoring import action_continuations, score_actions
from nightowl.distill.signals import demo_hint
from nightowl.errors import BackendUnavailableError
from nightowl.ledger.metered import MeteredModel, as_metered
from nightowl.llm.base import GenerationRequest, GenerationResult, ModelBackend, Usage

#: what a student does about an action already taken in this very state this episode
RepeatPolicy = Literal["explore", "escalate"]
REPEAT_POLICIES: tuple[str, ...] = get_args(RepeatPolicy)
#: whether a student may walk back through the exit it just came through
BacktrackPolicy = Literal["avoid", "allow"]
BACKTRACK_POLICIES: tuple[str, ...] = get_args(BacktrackPolicy)


def check_policies(repeats: str, backtrack: str) -> None:
    """Raise ValueError naming the first unknown repeat or backtrack policy."""
    for name, value, known in (("repeats", repeats, REPEAT_POLICIES),
                               ("backtrack", backtrack, BACKTRACK_POLICIES)):
        if value not in known:
            raise ValueError(f"{name} must be one of {', '.join(known)}, not {value!r}")


class StudentTier(Tier):
    """The frozen student: samples + acceptance rule.

    Args:
        model: the student backend; a `MeteredModel` is recorded, any other backend
            is used unmetered (`as_metered`).
        prices: the student's prices (for budget checks; the ledger prices calls too).
        rule: the acceptance rule.
        builder: the prompt builder.
        use_demos: put retrieved demos in the prompt.
        constrain: constrain samples to the valid actions (``choices=``) when known.
        temperature: sampling temperature for voting rules.
        max_tokens: generation cap per free-text sample (None: the builder's,
            `PromptBuilder.sample_max_tokens`: 16 for a one-line action, more for code).
        avoid_repeats: never act with an action already taken in this very state this
            episode (no progress in a deterministic game).
        repeats: with ``avoid_repeats``, how: ``"explore"`` -- score rules rank, and
            constrained voting rules sample, only the other valid actions, so the
            student tries something new (where a wrong move can be undone: maps,
            search); ``"escalate"`` -- the rule judges every valid action and a repeat
            it accepts goes to the next tier (where a wrong move is fatal). A repeat
            left either way (every valid action taken, or free text) escalates.
            `nightowl calibrate` chooses per family.
        backtrack: ``"avoid"`` -- with a valid-action list (scored, or sampled with
            ``choices=``), leave out the compass move that undoes the previous move
            while another move is valid (`nightowl.distill.moves`); a dead end still
            walks back. ``"allow"`` -- rank every valid action.
        name: tier name.
    """

    actor = "student"

    def __init__(
        self,
        model: ModelBackend,
        *,
        prices: Prices,
        rule: AcceptanceRule,
        builder: PromptBuilder | None = None,
        use_demos: bool = True,
        constrain: bool = True,
        temperature: float = 0.7,
        max_tokens: int | None = None,
        avoid_repeats: bool = False,
        repeats: RepeatPolicy = "explore",
        backtrack: BacktrackPolicy = "avoid",
        name: str = "student",
    ) -> None:
        check_policies(repeats, backtrack)
        self.model: MeteredModel = as_metered(model, role="student", prices=prices)
        self.prices = prices
        self.rule = rule
        self.builder = builder or PromptBuilder()
        self.use_demos = use_demos
        self.constrain = constrain
        self.temperature = temperature
        self.max_tokens = max_tokens if max_tokens is not None else self.builder.sample_max_tokens
        self.avoid_repeats = avoid_repeats
        self.repeats = repeats
        self.backtrack = backtrack
        self.name = name

    def describe(self) -> dict[str, Any]:
        """Configuration."""
        return {
            **super().describe(),
            "model": getattr(self.model, "name", type(self.model).__name__),
            "rule": self.rule.describe(),
            "avoid_repeats": self.avoid_repeats,
            "repeats": self.repeats,
            "backtrack": self.backtrack,
            "use_demos": self.use_demos,
            "constrain": self.constrain,
            "temperature": self.temperature,
            "prompt": self.builder.describe(),
        }

    async def decide(self, ctx: StepContext) -> TierDecision:
        """Sample, vote (or score), accept or escalate."""
        started = time.perf_counter()
        model = self.model.bind(ctx.call_site())
        prompt = build_prompt(self.builder, ctx, use_demos=self.use_demos)
        ptoks = count_tokens(model, prompt)
        usage_box = [Usage()]
        cost_box = [0.0]
        raw: list[str] = []
        failures: list[str] = []
        valid = tuple(ctx.valid_actions) if ctx.valid_actions else None
        by_norm = {normalize_action(a): a for a in valid} if valid else {}
        # a voting key -> the first sample that had it: a free-text or code action is
        # acted on as the model wrote it, never as its (lowercased, one-line) key
        as_written: dict[str, str] = {}
        if valid and (self.constrain or self.rule.uses_scores):
            valid = self._candidates(ctx, valid)
        calls = [0]

        def spend(usage: Usage) -> None:
            cost = self.prices.cost(
                usage.prompt_tokens, usage.cached_prompt_tokens, usage.completion_tokens
            )
            charge(ctx.budget, cost, usage.total_tokens)
            usage_box[0] = usage_box[0] + usage
            cost_box[0] += cost

        async def generate(k: int, temperature: float) -> GenerationResult:
            # choices continue the prompt ("...Action:" + " take coin"), like the demos
            choices = tuple(continuation(a) for a in valid) if (self.constrain and valid) else None
            per = self.max_tokens
            if choices:
                per = max(per, max(count_tokens(model, c) for c in choices) + 2)
            bound_toks = ptoks + 8 + k * per
            bound = self.prices.cost(ptoks + 8, 0, k * per)
            if not can_afford(ctx.budget, bound, bound_toks):
                raise BudgetStop()
            req = GenerationRequest(
                prompt=prompt,
                n=k,
                max_tokens=self.max_tokens,
                temperature=temperature,
                stop=self.builder.sample_stop,
                seed=sample_seed(ctx, calls[0]) if temperature > 0 else None,
                choices=choices,
            )
            calls[0] += 1
            res: GenerationResult = await model.generate(req)
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
                else:
                    as_written.setdefault(canonical_action(p.action), p.action)
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
                    "skipped_repeats": ctx.extras.get("skipped_repeats", 0),
                    "skipped_walk_back": ctx.extras.get("skipped_walk_back", 0),
                },
            }
            if verdict is not None and verdict.accepted and reason is None:
                key = verdict.action or ""
                act = by_norm.get(key) or as_written.get(key, key)
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
                verdict = await self._score(model, ctx, prompt, ptoks, valid, draw, spend, calls)
            else:
                verdict = await self.rule.judge(draw)
        except BudgetStop:
            return finish(None, "budget: cannot afford the student's next call")
        except BackendUnavailableError:
            raise  # a dead backend is an infrastructure error: the run stops (graph)
        except Exception as exc:  # model errors never crash the episode
            return finish(None, f"model error: {type(exc).__name__}: {str(exc)[:160]}")
        return finish(verdict)

    @property
    def explores(self) -> bool:
        """Whether repeats are left out before the rule judges (``repeats="explore"``)."""
        return self.avoid_repeats and self.repeats == "explore"

    def _candidates(self, ctx: StepContext, valid: tuple[str, ...]) -> tuple[str, ...]:
        """The valid actions the student chooses among (scored, or sampled as choices).

        Exploring: without those already taken in this state (`_fresh`). Then, with
        ``backtrack="avoid"``: without the move back through the exit just used, while
        another move is left (recorded in ``ctx.extras["skipped_walk_back"]``).
        """
        cands = self._fresh(ctx, valid) if self.explores else valid
        if self.backtrack == "avoid" and ctx.history:
            kept = without_walk_back(cands, ctx.history[-1][1])
            if len(kept) < len(cands):
                ctx.extras["skipped_walk_back"] = len(cands) - len(kept)
                cands = kept
        return cands

    @staticmethod
    def _fresh(ctx: StepContext, actions: tuple[str, ...]) -> tuple[str, ...]:
        """``actions`` without those already taken in this very state this episode.

        All of them when every one was taken (the accept check then escalates the
        repeat). Records how many were dropped in ``ctx.extras["skipped_repeats"]``.
        """
        fresh = tuple(a for a in actions if not repeats_without_progress(ctx, a))
        if not fresh or len(fresh) == len(actions):
            return actions
        ctx.extras["skipped_repeats"] = len(actions) - len(fresh)
        return fresh

    async def _score(
        self,
        model: MeteredModel,
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
        conts = action_continuations(actions)
        ctoks = sum(count_tokens(model, c) for c in conts)
        demos = ctx.demos if self.use_demos else ()
        method = self.builder.scoring
        calibrated = method.startswith("calibrated")  # a second, content-free scoring
        bound_toks = (ptoks + 8 + ctoks + 2 * len(conts)) * (2 if calibrated else 1)
        if not can_afford(ctx.budget, self.prices.cost(bound_toks, 0, 0), bound_toks):
            raise BudgetStop()
        calls[0] += 2 if calibrated else 1
        scored = await score_actions(
            model, prompt, actions, method=method,
            content_free_prompt=self.builder.content_free(demos) if calibrated else None,
        )
        spend(scored.usage)
        ranked, scores = list(actions), list(scored.scores)
        if self.explores and not valid:
            # a sampled action already taken in this very state is never progress
            # (a valid-action list was already narrowed by `_candidates`)
            keep = set(self._fresh(ctx, tuple(ranked)))
            if len(keep) < len(ranked):
                scores = [s for a, s in zip(ranked, scores, strict=True) if a in keep]
                ranked = [a for a in ranked if a in keep]
        hint = demo_hint(demos, ctx.observation, ranked) if self.rule.uses_demos else None
        return self.rule.judge_scores(ranked, scores, demo_action=hint.action if hint else None)
