"""The majority-vote baseline under the same budget."""

from __future__ import annotations

import asyncio
import itertools

from nightowl.agent.budget import Budget
from nightowl.agent.search.baseline import MajorityVote, VoteConfig
from nightowl.agent.search.space import SearchSpace
from nightowl.envs.multihop import MultiHopEnv
from nightowl.llm.scripted import FunctionModel


def test_majority_vote_picks_most_frequent_answer() -> None:
    env = MultiHopEnv()
    obs = env.reset("multihop/2hop/test/20003")
    space = SearchSpace.from_env(env, goal=obs.goal)
    answers = itertools.cycle([" answer[Foo]", " answer[bar]", " answer[foo]"])
    model = FunctionModel(lambda r: next(answers))
    budget = Budget(tokens=100_000, tool_calls=5)
    res = asyncio.run(MajorityVote(model, VoteConfig(seed=0, max_rollouts=6)).run(space, budget))
    assert res.final is not None and res.final.lower() == "answer[foo]"
    assert res.value == 4 / 6
    assert res.stats["rollouts"] == 6 and budget.used_of("tool_calls") == 0


def test_rollouts_stop_when_budget_ends_and_answer_from_what_they_read() -> None:
    env = MultiHopEnv()
    obs = env.reset("multihop/2hop/test/20003")
    space = SearchSpace.from_env(env, goal=obs.goal)
    model = FunctionModel(lambda r: "Nobody]" if r.prompt.endswith("answer[")
                          else " search[anything]")
    budget = Budget(tokens=100_000, tool_calls=7)
    res = asyncio.run(MajorityVote(model, VoteConfig(seed=0, max_depth=3)).run(space, budget))
    assert budget.used_of("tool_calls") == 7
    assert res.reason == "budget"
    # Two complete rollouts (3 searches, then a forced answer at max_depth) and a third
    # forced to answer when the tool calls ran out: three votes.
    assert res.stats["rollouts"] == 3 and res.stats["votes"] == 3
    assert res.final == "answer[Nobody]"
    assert env.snapshot().actions == ()


def test_rollout_cut_by_tokens_casts_no_vote() -> None:
    env = MultiHopEnv()
    obs = env.reset("multihop/2hop/test/20003")
    space = SearchSpace.from_env(env, goal=obs.goal)
    model = FunctionModel(lambda r: " search[anything]")
    budget = Budget(tokens=400, tool_calls=100)
    res = asyncio.run(MajorityVote(model, VoteConfig(seed=0, max_depth=50)).run(space, budget))
    assert res.stats["cut_rollouts"] == 1 and res.final is None
    assert budget.used_of("tokens") <= 400
