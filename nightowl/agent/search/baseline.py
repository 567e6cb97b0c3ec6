"""The same-budget baseline: independent sampled rollouts with a majority vote.

Rollouts are drawn one after another from the search root (same prompt format, same
budget line, same hard budget, same tool-call accounting as BAVT) until the budget cannot
pay for the next call. A rollout that reaches ``max_depth`` without answering, or that
wants a tool call when none is left, is forced to answer from what it has read (as BAVT
forces an answer from its best node, so neither method gets an advantage from the
forcing); a rollout cut short by the *token* budget casts no vote. The final
answers are normalised and the most frequent wins (ties: the first seen).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass

from nightowl.agent.budget import TOOL_CALLS, Budget
from nightowl.agent.search.bavt import SearchResult, ToolCallHook
from nightowl.agent.search.space import SearchSpace, Step, action_key
from nightowl.agent.search.step_budget import CallMeter, budget_line
from nightowl.errors import ModelError
from nightowl.llm.base import GenerationRequest, ModelBackend


@dataclass(kw_only=True)
class VoteConfig:
    """Baseline settings.

    Attributes:
        temperature: sampling temperature of every step.
        max_action_tokens / max_answer_tokens: generation caps.
        max_depth: steps per rollout before an answer is forced.
        max_rollouts: an upper bound on rollouts (the budget usually ends them first).
        seed: seeds the per-call sampling seeds.
    """

    temperature: float = 0.8
    max_action_tokens: int = 24
    max_answer_tokens: int = 16
    max_depth: int = 6
    max_rollouts: int = 64
    seed: int = 0
    max_consecutive_errors: int = 3


class MajorityVote:
    """Parallel sampling with a majority vote, under a hard budget."""

    def __init__(
        self,
        model: ModelBackend,
        config: VoteConfig | None = None,
        *,
        on_tool_call: ToolCallHook | None = None,
    ) -> None:
        self.model = model
        self.config = config or VoteConfig()
        self.on_tool_call = on_tool_call

    async def run(self, space: SearchSpace, budget: Budget) -> SearchResult:
        """Roll out until the budget ends; vote; the env is restored afterwards."""
        try:
            return await self._run(space, budget)
        finally:
            space.restore_root()

    async def _run(self, space: SearchSpace, budget: Budget) -> SearchResult:
        cfg = self.config
        rng = random.Random(cfg.seed)
        meter = CallMeter(self.model)
        stats: Counter[str] = Counter()
        votes: list[tuple[str, tuple[str, ...]]] = []  # (final action, path)
        trace: list[dict[str, object]] = []
        reason = "max_rollouts"
        errors = 0
        last_rollout = False
        for _ in range(cfg.max_rollouts):
            snap = space.root
            path: list[Step] = []
            valid = space.valid_actions
            final: str | None = None
            stopped = False
            while final is None and not stopped:
                if len(path) >= cfg.max_depth:
                    final, affordable = await self._force(space, budget, meter, path, valid,
                                                          rng, stats)
                    stopped = not affordable
                    break
                prompt = space.prompt(path, budget_line(budget), valid)
                res = await meter.call(budget, GenerationRequest(
                    prompt=prompt, n=1, max_tokens=cfg.max_action_tokens,
                    temperature=cfg.temperature, stop=("\n",), seed=rng.randrange(2**31),
                ))
                if res is None:
                    stopped = True
                    break
                if isinstance(res, ModelError):
                    errors += 1
                    stats["model_errors"] += 1
                    stopped = errors >= cfg.max_consecutive_errors
                    continue
                errors = 0
                action = space.parse(res.texts[0] if res.texts else "", valid)
                if action is None:
                    stats["malformed_proposals"] += 1
                    path.append(Step(action=(res.texts[0] if res.texts else "").strip(),
                                     observation="(not understood)"))
                    continue
                if space.is_final(action):
                    final = action
                    break
                if not budget.can_afford(**{TOOL_CALLS: 1}):
                    # Out of tool calls: answer from what this rollout has read (as BAVT
                    # forces an answer from its best node), then stop.
                    final, _ = await self._force(space, budget, meter, path, valid, rng, stats)
                    stopped = final is None
                    if final is not None:
                        reason = "budget"
                        last_rollout = True
                    break
                budget.charge(**{TOOL_CALLS: 1})
                stats["tool_calls"] += 1
                t0 = time.perf_counter()
                result, snap = space.execute(snap, action)
                if self.on_tool_call is not None:
                    self.on_tool_call(action, time.perf_counter() - t0,
                                      {"budget": budget.to_dict()})
                path.append(Step(action=action, observation=result.text))
                valid = result.valid_actions or valid
                if result.done:
                    # A finished game: its last action stands for the rollout's outcome.
                    final = action if result.won else None
                    if final is None:
                        stats["lost_rollouts"] += 1
                    break
            if stopped:
                reason = "model_error" if errors >= cfg.max_consecutive_errors else "budget"
                stats["cut_rollouts"] += 1
                break
            stats["rollouts"] += 1
            trace.append({"actions": [s.action for s in path], "final": final})
            if final is not None:
                votes.append((final, tuple(s.action for s in path) + (final,)))
            if last_rollout:
                break
        counts = Counter(action_key(f) for f, _ in votes)
        if not counts:
            return SearchResult(
                actions=(), final=None, value=0.0, terminal=False, reason=reason,
                usage=meter.usage, tool_calls=int(stats["tool_calls"]),
                budget=budget.to_dict(), stats=dict(stats), trace=trace,
            )
        best, n_best = counts.most_common(1)[0]  # ties: the first seen
        final_action, actions = next(v for v in votes if action_key(v[0]) == best)
        stats["votes"] = len(votes)
        return SearchResult(
            actions=actions if space.is_final(final_action) else actions[:-1],
            final=final_action if space.is_final(final_action) else None,
            value=n_best / len(votes), terminal=True, reason=reason,
            usage=meter.usage, tool_calls=int(stats["tool_calls"]), budget=budget.to_dict(),
            stats=dict(stats), trace=trace,
        )

    async def _force(
        self, space: SearchSpace, budget: Budget, meter: CallMeter, path: list[Step],
        valid: tuple[str, ...] | None, rng: random.Random, stats: Counter[str],
    ) -> tuple[str | None, bool]:
        """A forced final answer (or None) and whether the budget could pay for it."""
        if space.answer_prefix is None:
            return None, True
        prompt = f"{space.prompt(path, budget_line(budget), valid)} {space.answer_prefix}"
        res = await meter.call(budget, GenerationRequest(
            prompt=prompt, n=1, max_tokens=self.config.max_answer_tokens, temperature=0.0,
            stop=("\n", space.answer_suffix or "\n"), seed=rng.randrange(2**31),
        ))
        if res is None:
            return None, False
        if isinstance(res, ModelError) or not res.completions:
            return None, True
        stats["forced_answers"] += 1
        return space.make_answer(res.completions[0].text), True
