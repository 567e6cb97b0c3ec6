"""Budgets are never exceeded, whatever the model says (hypothesis)."""

from __future__ import annotations

import asyncio
import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nightowl.agent.budget import Budget
from nightowl.agent.search.baseline import MajorityVote, VoteConfig
from nightowl.agent.search.bavt import BavtConfig, BavtSearch
from nightowl.agent.search.space import SearchSpace
from nightowl.agent.search.step_budget import budget_line, settle, sub_budget
from nightowl.envs.multihop import MultiHopEnv
from nightowl.llm.scripted import FunctionModel
from tests.bavt.helpers import TreeEnv

texts = st.lists(
    st.one_of(
        st.text(max_size=60),
        st.sampled_from([" go a", " go b", " go c", " search[x]", " answer[y]", "]", "["]),
        st.builds(lambda w: f" search[{w}]", st.text(min_size=1, max_size=20)),
        st.builds(lambda w: f" answer[{w}]", st.text(min_size=1, max_size=20)),
        st.just(" word " * 80),
    ),
    min_size=1,
    max_size=12,
)
scores = st.lists(
    st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just(0.0)), min_size=1,
    max_size=8,
)


def cycling_model(outputs: list[str], score_values: list[float]) -> FunctionModel:
    gen = itertools.cycle(outputs)
    sc = itertools.cycle(score_values)
    return FunctionModel(lambda req: next(gen), scores=lambda p, c: next(sc))


def check(budget: Budget, limits: dict[str, float]) -> None:
    for name, lim in limits.items():
        assert budget.used_of(name) <= lim, (name, budget)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    outputs=texts,
    score_values=scores,
    tokens=st.integers(min_value=0, max_value=3000),
    tool_calls=st.integers(min_value=0, max_value=8),
    critic=st.sampled_from(["auto", "score", "generate"]),
    env_kind=st.sampled_from(["tree", "multihop"]),
    seed=st.integers(min_value=0, max_value=1000),
)
def test_bavt_never_exceeds_budget(outputs, score_values, tokens, tool_calls, critic, env_kind,
                                   seed) -> None:
    env = TreeEnv() if env_kind == "tree" else MultiHopEnv()
    obs = env.reset("tree/t/test/0" if env_kind == "tree" else "multihop/2hop/test/20000")
    space = SearchSpace.from_env(env, goal=obs.goal, valid_actions=obs.valid_actions)
    budget = Budget(tokens=tokens, tool_calls=tool_calls)
    model = cycling_model(outputs, score_values)
    res = asyncio.run(BavtSearch(model, BavtConfig(seed=seed, critic=critic)).run(space, budget))
    check(budget, {"tokens": tokens, "tool_calls": tool_calls})
    assert res.tool_calls == budget.used_of("tool_calls")
    # Usage reported equals what was charged (the fakes bill honestly).
    assert res.usage.prompt_tokens + res.usage.completion_tokens == budget.used_of("tokens")
    # The env was restored.
    assert env.snapshot().actions == ()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    outputs=texts,
    tokens=st.integers(min_value=0, max_value=3000),
    tool_calls=st.integers(min_value=0, max_value=8),
    seed=st.integers(min_value=0, max_value=1000),
)
def test_majority_vote_never_exceeds_budget(outputs, tokens, tool_calls, seed) -> None:
    env = MultiHopEnv()
    obs = env.reset("multihop/3hop/test/20001")
    space = SearchSpace.from_env(env, goal=obs.goal)
    budget = Budget(tokens=tokens, tool_calls=tool_calls)
    model = cycling_model(outputs, [0.0])
    asyncio.run(MajorityVote(model, VoteConfig(seed=seed, max_rollouts=8)).run(space, budget))
    check(budget, {"tokens": tokens, "tool_calls": tool_calls})


@given(
    episode_tokens=st.integers(min_value=0, max_value=10_000),
    used=st.integers(min_value=0, max_value=10_000),
    step_tokens=st.integers(min_value=0, max_value=10_000),
)
def test_step_budget_is_capped_by_episode(episode_tokens, used, step_tokens) -> None:
    episode = Budget(tokens=episode_tokens, tool_calls=5)
    if episode.can_afford(tokens=used):
        episode.charge(tokens=used)
    step = sub_budget(episode, tokens=step_tokens, tool_calls=10)
    assert step.limit("tokens") <= episode.remaining("tokens")
    assert step.limit("tool_calls") == 5
    step.charge(tokens=step.limit("tokens"), tool_calls=step.limit("tool_calls"))
    settle(episode, step)  # never raises: the step could only spend what the episode had
    assert episode.used_of("tokens") <= episode_tokens


def test_budget_line_shows_remaining_and_used() -> None:
    b = Budget(tokens=1000, tool_calls=8)
    b.charge(tokens=250, tool_calls=3)
    line = budget_line(b)
    assert "tool calls 3/8 used, 5 left" in line and "tokens 250/1000 used, 750 left" in line


def test_budget_line_reaches_the_prompt() -> None:
    env = TreeEnv()
    obs = env.reset("tree/t/test/0")
    space = SearchSpace.from_env(env, goal=obs.goal, valid_actions=obs.valid_actions)
    model = FunctionModel(lambda req: " go a")
    asyncio.run(BavtSearch(model, BavtConfig(seed=0)).run(space, Budget(tokens=5000,
                                                                       tool_calls=3)))
    assert all("Budget: tool calls" in c.prompt for c in model.calls if c.prompt)
