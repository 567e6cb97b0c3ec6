"""BAVT search: finds a known path, handles malformed critics, deterministic, prunes."""

from __future__ import annotations

import asyncio

import pytest

from nightowl.agent.budget import Budget
from nightowl.agent.search.bavt import BavtConfig, BavtSearch
from nightowl.agent.search.critic import ResidualCritic, parse_delta
from nightowl.agent.search.space import SearchSpace
from nightowl.llm.scripted import FunctionModel, ScriptedModel
from tests.bavt.helpers import TreeEnv, actions_in, new_step_action


def tree_space(env: TreeEnv) -> SearchSpace:
    obs = env.reset("tree/t/test/0")
    return SearchSpace.from_env(env, goal=obs.goal, observation=obs.text,
                                valid_actions=obs.valid_actions)


def proposer(env: TreeEnv):
    """Proposes every branch (cycling from "a"), so the tree is fully explorable."""
    state = {"i": -1}

    def fn(req):
        state["i"] += 1
        return f" go {'abc'[state['i'] % 3]}"

    return fn


def gold_critic(env: TreeEnv):
    """Residual critic that likes gold-path steps (log p per scale option)."""

    def score(prompt: str, cont: str) -> float:
        a = new_step_action(prompt)
        done = actions_in(prompt.split("New step:")[0])
        on_gold = tuple(done + [a]) == env.gold[: len(done) + 1]
        table = {" better": -0.1, " solved": -3.0, " same": -2.0, " worse": -4.0}
        if not on_gold:
            table = {" better": -4.0, " solved": -6.0, " same": -0.5, " worse": -1.0}
        return table[cont]

    return score


def run(coro):
    return asyncio.run(coro)


def test_finds_known_path_on_scripted_tree() -> None:
    env = TreeEnv()
    space = tree_space(env)
    model = FunctionModel(proposer(env), scores=gold_critic(env))
    budget = Budget(tokens=50_000, tool_calls=30)
    res = run(BavtSearch(model, BavtConfig(seed=3, proposals=3)).run(space, budget))
    assert res.actions == env.gold
    assert res.terminal and res.reason == "confident"
    assert res.value == 1.0
    # The live environment is back at the root.
    assert env.path == []
    # Non-gold children were pruned as non-progress (or lost), not expanded further.
    assert res.stats.get("pruned_no_progress", 0) + res.stats.get("pruned_lost", 0) > 0
    assert budget.used_of("tool_calls") == res.tool_calls <= 30


def test_search_is_deterministic_under_a_seed() -> None:
    def once(seed: int):
        env = TreeEnv()
        model = FunctionModel(proposer(env), scores=gold_critic(env))
        budget = Budget(tokens=50_000, tool_calls=30)
        return run(BavtSearch(model, BavtConfig(seed=seed)).run(tree_space(env), budget))

    a, b = once(11), once(11)
    assert a.actions == b.actions
    assert a.trace == b.trace
    assert a.budget == b.budget


def test_duplicate_proposals_and_invalid_actions_are_pruned() -> None:
    env = TreeEnv()
    # Always the same (invalid) proposal, then the same valid one.
    model = ScriptedModel(["jump", "jump", "jump", " go a", " go a", " go a"], default=" go a")
    budget = Budget(tokens=50_000, tool_calls=10)
    res = run(BavtSearch(model, BavtConfig(seed=0, proposals=3)).run(tree_space(env), budget))
    s = res.stats
    assert s.get("malformed_proposals", 0) + s.get("pruned_invalid", 0) >= 1
    assert s.get("duplicate_proposals", 0) >= 2
    assert budget.used_of("tool_calls") <= 10


@pytest.mark.parametrize(
    "critic_reply", ["", "great step!", "nan", "∞", "score: lots", "\n\n", "1e999"]
)
def test_malformed_generated_critic_output_gives_zero_delta(critic_reply: str) -> None:
    env = TreeEnv()

    def fn(req):
        if req.prompt.rstrip().endswith("Score:"):
            return critic_reply
        return " go b"

    model = FunctionModel(fn)
    budget = Budget(tokens=20_000, tool_calls=5)
    res = run(BavtSearch(model, BavtConfig(seed=0, critic="generate")).run(tree_space(env), budget))
    # No crash; the step was judged non-progress and recorded as malformed.
    if critic_reply in ("1e999",):
        assert res.stats.get("critic_malformed", 0) == 0  # parsed, clipped to 1
    else:
        assert res.stats.get("critic_malformed", 0) >= 1
        assert res.stats.get("pruned_no_progress", 0) >= 1


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_malformed_scores_give_zero_delta(bad: float) -> None:
    model = FunctionModel(lambda r: " go a", scores=lambda p, c: bad)
    critic = ResidualCritic(model, mode="score")
    v = run(critic.judge("Goal: x\nNew step:\nAction: go a\nObservation: y", Budget(tokens=1000)))
    assert v.delta == 0.0 and v.status == "malformed"


def test_critic_failures_are_recorded_not_raised() -> None:
    def boom(req):
        raise RuntimeError("server down")

    model = FunctionModel(boom)
    critic = ResidualCritic(model, mode="generate")
    v = run(critic.judge("x", Budget(tokens=1000)))
    assert v.status == "error" and v.delta == 0.0


def test_critic_call_not_made_when_unaffordable() -> None:
    model = FunctionModel(lambda r: "0.5")
    critic = ResidualCritic(model, mode="generate")
    budget = Budget(tokens=3)
    v = run(critic.judge("a long prompt " * 20, budget))
    assert v.status == "budget" and model.calls == []
    assert budget.used_of("tokens") == 0


def test_parse_delta() -> None:
    assert parse_delta("0.5") == 0.5
    assert parse_delta("Score: -3") == -1.0
    assert parse_delta("+.25 because") == 0.25
    assert parse_delta("no") is None


def test_critic_scale_expectation() -> None:
    # "solved" certain -> the scale's top delta; "worse" certain -> the bottom.
    model = FunctionModel(lambda r: "", scores={" solved": 0.0, " better": -50, " same": -50,
                                               " worse": -50})
    v = run(ResidualCritic(model, mode="score").judge("p", Budget(tokens=10_000)))
    assert v.delta == pytest.approx(0.4, abs=1e-6)


def test_model_errors_end_the_search_without_raising() -> None:
    def boom(req):
        raise RuntimeError("500")

    env = TreeEnv()
    res = run(BavtSearch(FunctionModel(boom), BavtConfig(seed=0)).run(
        tree_space(env), Budget(tokens=10_000, tool_calls=5)))
    assert res.reason == "model_error"
    assert res.first_action is None and env.path == []


def test_returns_best_partial_path_when_budget_ends() -> None:
    env = TreeEnv(gold=("go a", "go a", "go a", "go a", "go a"))
    model = FunctionModel(proposer(env), scores=gold_critic(env))
    budget = Budget(tokens=50_000, tool_calls=2)
    res = run(BavtSearch(model, BavtConfig(seed=1)).run(tree_space(env), budget))
    assert not res.terminal
    assert res.reason in ("budget", "exhausted")
    assert res.actions and res.actions[0] == "go a"
    assert budget.used_of("tool_calls") <= 2


def test_non_progress_answer_is_pruned_even_after_good_evidence() -> None:
    from nightowl.envs.multihop import MultiHopEnv

    env = MultiHopEnv()
    obs = env.reset("multihop/2hop/test/20000")
    q, w = env.question, env._world
    gold = [f"search[{w.name(e)}]" for e in q.chain[:-1]] + [f"answer[{q.answer}]"]
    wrong = "answer[Somebody Else]"

    def fn(req):
        n = req.prompt.split("Goal: ")[-1].count("\nAction: ")
        if n < len(gold) - 1:
            return f" {gold[n]}"
        return f" {wrong}" if req.n and len(fn.calls) % 2 == 0 else f" {gold[-1]}"

    fn.calls = []

    def wrapped(req):
        fn.calls.append(1)
        return fn(req)

    def score(prompt, cont):
        action = new_step_action(prompt)
        good = action in gold
        table = ({" better": -0.1, " solved": -1.0, " same": -3.0, " worse": -4.0} if good
                 else {" better": -4.0, " solved": -5.0, " same": -0.5, " worse": -1.0})
        return table[cont]

    space = SearchSpace.from_env(env, goal=obs.goal)
    res = run(BavtSearch(FunctionModel(wrapped, scores=score), BavtConfig(seed=0)).run(
        space, Budget(tokens=50_000, tool_calls=10)))
    assert res.final == gold[-1]
    wrong_nodes = [n for n in res.trace if n["action"] == wrong]
    assert wrong_nodes and all(n["pruned"] == "no_progress" for n in wrong_nodes)
