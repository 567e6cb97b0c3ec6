"""One small BAVT search with the embedded SmolLM2 (slow: loads the model on CPU)."""

from __future__ import annotations

import asyncio

import pytest

from nightowl.agent.budget import Budget
from nightowl.agent.search.bavt import BavtConfig, BavtSearch
from nightowl.agent.search.space import SearchSpace
from nightowl.envs.multihop import MultiHopEnv

pytestmark = pytest.mark.slow


def test_bavt_with_smollm2_stays_within_budget() -> None:
    from nightowl.llm.registry import build_backend

    model = build_backend("smollm2")
    env = MultiHopEnv(top_k=2, snippet_chars=200)
    obs = env.reset("multihop/2hop/test/20000")
    space = SearchSpace.from_env(env, goal=obs.goal)
    budget = Budget(tokens=1500, tool_calls=2)
    res = asyncio.run(BavtSearch(model, BavtConfig(seed=0)).run(space, budget))
    assert budget.used_of("tokens") <= 1500 and budget.used_of("tool_calls") <= 2
    assert res.usage.prompt_tokens + res.usage.completion_tokens == budget.used_of("tokens")
    assert res.stats.get("critic_calls", 0) >= 0 and res.reason in ("budget", "exhausted",
                                                                   "confident")
    assert env.snapshot().actions == ()
