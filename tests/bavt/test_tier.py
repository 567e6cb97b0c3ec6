"""BavtTier on the ladder: accepts after a search, falls back on envs that cannot clone."""

from __future__ import annotations

import asyncio

from nightowl.agent.budget import Budget
from nightowl.agent.ladder import Ladder, StepContext, Tier, TierDecision, accept, escalate
from nightowl.agent.search.bavt import BavtConfig
from nightowl.agent.search.tier import BavtTier
from nightowl.llm.scripted import FunctionModel
from tests.bavt.helpers import TreeEnv, actions_in, new_step_action


def ctx_for(env: TreeEnv, budget: Budget) -> StepContext:
    obs = env.reset("tree/t/test/0")
    return StepContext(run_id="", episode_id="", task_id="tree/t/test/0", step=0, goal=obs.goal,
                       observation=obs.text, valid_actions=obs.valid_actions, budget=budget,
                       env=env, env_name="tree")


def gold_model(env: TreeEnv) -> FunctionModel:
    state = {"i": -1}

    def fn(req):
        state["i"] += 1
        return f" go {'abc'[state['i'] % 3]}"

    def score(prompt: str, cont: str) -> float:
        a = new_step_action(prompt)
        done = actions_in(prompt.split("New step:")[0])
        good = tuple(done + [a]) == env.gold[: len(done) + 1]
        return {" better": -0.1 if good else -4, " solved": -3, " same": -2 if good else -0.3,
                " worse": -4 if good else -1}[cont]

    return FunctionModel(fn, scores=score)


def test_tier_accepts_first_action_of_best_path_and_charges_episode() -> None:
    env = TreeEnv()
    budget = Budget(tokens=100_000, tool_calls=40, steps=10)
    tier = BavtTier(gold_model(env), config=BavtConfig(seed=0), step_tokens=20_000,
                    step_tool_calls=20)
    ctx = ctx_for(env, budget)
    dec = asyncio.run(tier.decide(ctx))
    assert dec.accepted and dec.action == "go b"
    assert dec.meta["path"] == ["go b", "go a", "go c"]
    assert dec.confidence == 1.0
    # What the search spent is charged to the episode budget, within the step budget.
    assert 0 < budget.used_of("tool_calls") <= 20
    assert 0 < budget.used_of("tokens") <= 20_000
    assert budget.used_of("tokens") == dec.usage.prompt_tokens + dec.usage.completion_tokens
    # The live environment was not moved by the search.
    assert env.path == []


def test_tier_falls_back_with_reason_when_env_cannot_clone() -> None:
    env = TreeEnv(snapshots=False)
    budget = Budget(tokens=10_000, tool_calls=10)
    model = FunctionModel(lambda r: " go a")
    dec = asyncio.run(BavtTier(model).decide(ctx_for(env, budget)))
    assert not dec.accepted
    assert "cannot snapshot" in dec.reason
    assert dec.meta["fallback"] == "cannot_clone"
    assert model.calls == [] and budget.used_of("tokens") == 0


def test_tier_without_env_escalates() -> None:
    ctx = StepContext(run_id="", episode_id="", task_id="x", step=0, goal="g", observation="o")
    dec = asyncio.run(BavtTier(FunctionModel(lambda r: "x")).decide(ctx))
    assert not dec.accepted and "no environment" in dec.reason


def test_tier_escalates_when_episode_budget_is_spent() -> None:
    env = TreeEnv()
    budget = Budget(tokens=100, tool_calls=2)
    budget.charge(tokens=100)
    model = FunctionModel(lambda r: " go a")
    dec = asyncio.run(BavtTier(model).decide(ctx_for(env, budget)))
    assert not dec.accepted and dec.reason == "budget"
    assert model.calls == []


def test_tier_escalates_on_low_value() -> None:
    env = TreeEnv()
    budget = Budget(tokens=100_000, tool_calls=40)
    # The critic never sees progress: everything is pruned; best partial = root.
    model = FunctionModel(lambda r: " go a", scores=lambda p, c: 0.0 if c == " worse" else -9)
    dec = asyncio.run(BavtTier(model, accept_value=0.6).decide(ctx_for(env, budget)))
    assert not dec.accepted


class _Disagree(Tier):
    name = "student"

    async def decide(self, ctx: StepContext) -> TierDecision:
        return escalate(self.name, "student", "disagree 1/3", candidates=(("go c", 1.0),))


class _Teacher(Tier):
    name = "teacher"
    actor = "teacher"
    calls = 0

    async def decide(self, ctx: StepContext) -> TierDecision:
        _Teacher.calls += 1
        return accept(self.name, self.actor, ctx.env.expert_action())


def test_ladder_student_bavt_teacher() -> None:
    env = TreeEnv()
    budget = Budget(tokens=100_000, tool_calls=40)
    ladder = Ladder([_Disagree(), BavtTier(gold_model(env), step_tokens=20_000), _Teacher()])
    out = asyncio.run(ladder.decide(ctx_for(env, budget)))
    assert out.decision.tier == "bavt" and out.action == "go b"
    assert _Teacher.calls == 0
    # Non-cloneable: the teacher acts, with BAVT's reason in the trail.
    env2 = TreeEnv(snapshots=False)
    ladder2 = Ladder([_Disagree(), BavtTier(gold_model(env2)), _Teacher()])
    out2 = asyncio.run(ladder2.decide(ctx_for(env2, Budget(tokens=1000))))
    assert out2.decision.tier == "teacher"
    assert "cannot snapshot" in out2.trail[1].reason


def test_tier_charges_cost_and_respects_cost_limit() -> None:
    from nightowl.config import Prices

    env = TreeEnv()
    prices = Prices(input=1000.0, cached_input=1000.0, output=2000.0)  # USD per 1M tokens
    budget = Budget(cost_usd=0.5, tool_calls=40)  # 0.5 USD = 250 tokens at the dearest price
    tier = BavtTier(gold_model(env), prices=prices, step_tokens=20_000)
    dec = asyncio.run(tier.decide(ctx_for(env, budget)))
    assert budget.used_of("cost_usd") <= 0.5
    assert budget.used_of("tokens") <= 250
    assert dec.cost_usd == prices.cost(dec.usage.prompt_tokens, dec.usage.cached_prompt_tokens,
                                       dec.usage.completion_tokens)


def test_final_actions_need_the_confident_bar() -> None:
    from nightowl.agent.search.space import SearchSpace  # noqa: F401 - documents the path
    from nightowl.envs.multihop import MultiHopEnv

    env = MultiHopEnv()
    obs = env.reset("multihop/2hop/test/20000")
    # Always answers at once; the critic says "better" (V = 0.5 + ~0.2 < 0.85).
    model = FunctionModel(lambda r: " answer[Somebody]",
                          scores=lambda p, c: 0.0 if c == " better" else -9.0)
    ctx = StepContext(run_id="", episode_id="", task_id="multihop/2hop/test/20000", step=0,
                      goal=obs.goal, observation="", budget=Budget(tokens=20_000, tool_calls=5),
                      env=env, env_name="multihop")
    dec = asyncio.run(BavtTier(model, accept_value=0.6).decide(ctx))
    assert not dec.accepted and "final action" in dec.reason
    assert dec.candidates[0][0] == "answer[Somebody]"
    ok = asyncio.run(BavtTier(model, accept_value=0.6, accept_final_value=0.6).decide(ctx))
    assert ok.accepted and ok.action == "answer[Somebody]"


def test_tier_records_roles_and_tool_calls_in_the_ledger(sqlite_db) -> None:
    from sqlalchemy import select

    from nightowl.config import Prices
    from nightowl.ledger import Ledger, MeteredModel
    from nightowl.ledger.tables import ToolCall

    ledger = Ledger(sqlite_db)
    run = ledger.start_run("bavt-tier", "eval")
    eid = ledger.start_episode(run, "tree/t/test/0", "tree", "test")
    env = TreeEnv()
    prices = Prices(input=1.0, cached_input=0.5, output=2.0)
    model = MeteredModel(gold_model(env), ledger, prices, run_id=run, role="student")
    budget = Budget(tokens=100_000, tool_calls=40)
    ctx = ctx_for(env, budget)
    ctx.run_id, ctx.episode_id, ctx.step = run, eid, 3
    dec = asyncio.run(BavtTier(model, step_tokens=20_000).decide(ctx))
    assert dec.accepted
    roles = {c.role for c in ledger.model_calls(run)}
    assert roles == {"bavt", "critic"}
    assert all(c.step == 3 and c.episode_id == eid for c in ledger.model_calls(run))
    with sqlite_db.sessions() as s:
        tools = s.execute(select(ToolCall).where(ToolCall.run_id == run)).scalars().all()
    assert len(tools) == budget.used_of("tool_calls") > 0
    assert {t.tool for t in tools} == {"bavt:tree"}
    assert all("budget" in (t.meta or {}) and "action" in t.meta for t in tools)


def test_tier_falls_back_when_snapshot_raises() -> None:
    class Liar(TreeEnv):
        @property
        def can_snapshot(self) -> bool:
            return True

        def snapshot(self):
            raise NotImplementedError("no clones today")

    env = Liar()
    dec = asyncio.run(BavtTier(FunctionModel(lambda r: " go a")).decide(
        ctx_for(env, Budget(tokens=1000))))
    assert not dec.accepted and "no clones today" in dec.reason
    assert dec.meta["fallback"] == "cannot_clone"
