import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nightowl.agent.acceptance import Majority, Sequential, Unanimity
from nightowl.agent.budget import Budget
from nightowl.agent.ladder import Ladder, StepContext, Tier, accept, escalate
from nightowl.agent.tiers import OracleTier, StudentTier, TeacherTier
from nightowl.config import FRONTIER_PRICES, SMALL_HOSTED_PRICES
from nightowl.errors import ModelError
from nightowl.llm.scripted import FunctionModel, ScriptedModel

VALID = ("go north", "take coin", "look around")


def ctx(budget=None, **kw):
    return StepContext(
        run_id="r",
        episode_id="e",
        task_id="t/x/test/1",
        step=0,
        goal="find the coin",
        observation="You are in the kitchen.",
        valid_actions=VALID,
        budget=budget or Budget(),
        **kw,
    )


class Fixed(Tier):
    def __init__(self, name, action=None, reason="no"):
        self.name, self.action, self.reason, self.calls = name, action, reason, 0

    async def decide(self, c):
        self.calls += 1
        if self.action:
            return accept(self.name, "x", self.action, candidates=((self.action, 1.0),))
        return escalate(self.name, "x", self.reason, candidates=(("go north", 2.0),))


async def test_escalation_order_and_first_accept_wins():
    a, b, c = Fixed("a"), Fixed("b", "take coin"), Fixed("c", "look around")
    out = await Ladder([a, b, c]).decide(ctx())
    assert out.action == "take coin" and [d.tier for d in out.trail] == ["a", "b"]
    assert c.calls == 0


async def test_fallback_best_and_end():
    out = await Ladder([Fixed("a"), Fixed("b")], fallback="best").decide(ctx())
    assert out.action == "go north" and out.decision.tier == "fallback"
    out = await Ladder([Fixed("a"), Fixed("b")], fallback="end").decide(ctx())
    assert out.action is None and "all tiers escalated" in out.decision.reason


def test_unique_names():
    with pytest.raises(ValueError):
        Ladder([Fixed("a"), Fixed("a")])


async def test_student_unanimous_accepts_and_bills_budget():
    model = ScriptedModel([" take coin", "take coin", "Take coin."])
    tier = StudentTier(model, prices=SMALL_HOSTED_PRICES, rule=Unanimity(3))
    b = Budget()
    d = await tier.decide(ctx(b))
    assert d.accepted and d.action == "take coin" and d.samples == 3
    assert model.calls[0].n == 3 and model.calls[0].choices == tuple(" " + a for a in VALID)
    assert b.used_of("cost_usd") == pytest.approx(d.cost_usd) and d.cost_usd > 0


async def test_student_sequential_saves_samples():
    model = ScriptedModel(["go north", "take coin", "x", "x", "x"])
    tier = StudentTier(model, prices=SMALL_HOSTED_PRICES, rule=Sequential(5, 1.0))
    d = await tier.decide(ctx())
    assert not d.accepted and d.samples == 2 and len(model.calls) == 2
    assert model.remaining == 3


async def test_student_garbage_and_empty_output_escalates():
    model = ScriptedModel(["", "%%%%", "zzzz qqq"])
    d = await StudentTier(model, prices=SMALL_HOSTED_PRICES, rule=Unanimity(3)).decide(ctx())
    assert not d.accepted and d.meta["parse_failures"] == 3


async def test_student_model_error_escalates():
    model = ScriptedModel([ModelError("server down")])
    d = await StudentTier(model, prices=SMALL_HOSTED_PRICES, rule=Majority(3, 0.6)).decide(ctx())
    assert not d.accepted and d.reason.startswith("model error")


async def test_student_margin_rule_uses_scores():
    model = ScriptedModel(
        [], scores={" take coin\n": -0.1, " go north\n": -3.0, " look around\n": -4.0}
    )
    from nightowl.agent.acceptance import LogprobMargin

    d = await StudentTier(model, prices=SMALL_HOSTED_PRICES, rule=LogprobMargin(1.0)).decide(ctx())
    assert d.accepted and d.action == "take coin" and len(model.score_calls) == 1
    assert not model.calls


async def test_student_without_valid_actions_uses_parser():
    model = ScriptedModel(["Action: open the box", "open the box.", "> open the box"])
    c = ctx()
    c.valid_actions = None
    d = await StudentTier(model, prices=SMALL_HOSTED_PRICES, rule=Unanimity(3)).decide(c)
    assert d.accepted and d.action == "open the box" and model.calls[0].choices is None


async def test_student_cannot_afford_escalates_without_calling():
    model = ScriptedModel(["take coin"] * 3)
    b = Budget(cost_usd=1e-9)
    d = await StudentTier(model, prices=SMALL_HOSTED_PRICES, rule=Unanimity(3)).decide(ctx(b))
    assert not d.accepted and d.reason.startswith("budget") and not model.calls


async def test_teacher_error_retries_then_escalates():
    model = ScriptedModel([ModelError("boom"), ModelError("boom again")])
    d = await TeacherTier(model, prices=FRONTIER_PRICES, retries=1).decide(ctx())
    assert not d.accepted and "teacher error" in d.reason and d.teacher_calls == 2
    model = ScriptedModel([ModelError("boom"), "take coin"])
    d = await TeacherTier(model, prices=FRONTIER_PRICES, retries=1).decide(ctx())
    assert d.accepted and d.action == "take coin"


class FakeEnv:
    has_expert = True
    name = "fake"

    def __init__(self, action="take coin", exc=None):
        self.action, self.exc = action, exc

    def expert_action(self):
        if self.exc:
            raise self.exc
        return self.action


class Tok:
    def count_tokens(self, text):
        return len(text.split())


async def test_oracle_bills_teacher_prompt(ledger):
    run = ledger.start_run("t", "test", {})
    ep = ledger.start_episode(run, "t/x/test/1", "fake", "test")
    tier = OracleTier(ledger=ledger, prices=FRONTIER_PRICES, tokenizer=Tok(), output_tokens=60)
    c = ctx(env=FakeEnv())
    c.run_id, c.episode_id = run, ep
    d = await tier.decide(c)
    assert d.accepted and d.action == "take coin" and d.teacher_calls == 1
    calls = ledger.model_calls(run)
    assert len(calls) == 1 and calls[0].role == "teacher" and calls[0].model == "oracle:fake"
    assert calls[0].completion_tokens == 60 and calls[0].meta == {"oracle": True}
    assert calls[0].prompt_tokens == Tok().count_tokens(
        tier.builder.build(goal=c.goal, observation=c.observation, valid_actions=VALID)
    )


async def test_oracle_failures_escalate():
    tier = OracleTier(ledger=None, prices=FRONTIER_PRICES, tokenizer=Tok())
    assert "no expert action" in (await tier.decide(ctx(env=FakeEnv(action=None)))).reason
    assert "teacher error" in (await tier.decide(ctx(env=FakeEnv(exc=RuntimeError("x"))))).reason
    assert "budget" in (await tier.decide(ctx(Budget(teacher_calls=0), env=FakeEnv()))).reason


@settings(max_examples=60, deadline=None)
@given(
    outputs=st.lists(
        st.sampled_from(["take coin", "go north", "", "junk!!", "look around"]),
        min_size=1,
        max_size=40,
    ),
    cost_limit=st.floats(0, 0.002),
    teacher_limit=st.integers(0, 3),
)
async def test_budget_never_exceeded_by_ladder(outputs, cost_limit, teacher_limit):
    it = iter(outputs * 50)
    student = FunctionModel(lambda req: next(it))
    ladder = Ladder(
        [
            StudentTier(student, prices=SMALL_HOSTED_PRICES, rule=Unanimity(3)),
            OracleTier(ledger=None, prices=FRONTIER_PRICES, tokenizer=Tok()),
        ]
    )
    b = Budget(cost_usd=cost_limit, teacher_calls=teacher_limit)
    for _ in range(6):
        await ladder.decide(ctx(b, env=FakeEnv()))
        assert b.used_of("cost_usd") <= cost_limit + 1e-12
        assert b.used_of("teacher_calls") <= teacher_limit


async def test_student_repeat_guard_escalates_loops():
    """Free text (no ``choices=``): a repeated action can only be caught after voting."""
    model = ScriptedModel(["look around"] * 6)
    tier = StudentTier(model, prices=SMALL_HOSTED_PRICES, rule=Unanimity(3), avoid_repeats=True,
                       constrain=False)
    c = ctx()
    assert (await tier.decide(c)).accepted
    c.history = (("You are in the kitchen.", "look around"),)
    d = await tier.decide(c)
    assert not d.accepted and d.reason.startswith("repeat without progress")


async def test_repeat_guard_ignores_move_counters():
    model = ScriptedModel(["go north"] * 3)
    tier = StudentTier(model, prices=SMALL_HOSTED_PRICES, rule=Unanimity(3), avoid_repeats=True,
                       constrain=False)
    c = ctx()
    c.observation = "-= Salon =- exit to the west. -= Salon =-0/5"
    c.history = (("-= Salon =- exit to the west. -= Salon =-0/3", "go north"),)
    d = await tier.decide(c)
    assert not d.accepted and d.reason.startswith("repeat without progress")


async def test_repeat_guard_sees_cycles_longer_than_the_history():
    """A 4-step cycle (read map, task, move west, move east) leaves the short history;
    the episode-wide ``seen`` keys still catch the repeat (found on twx/mapreader)."""
    from nightowl.agent.state import visit_key

    model = ScriptedModel(["look around"] * 9)
    tier = StudentTier(model, prices=SMALL_HOSTED_PRICES, rule=Unanimity(3), avoid_repeats=True,
                       constrain=False)
    c = ctx()
    c.history = (("The map reads: ...", "task"), ("You are in the studio.", "move east"))
    assert (await tier.decide(c)).accepted
    c.seen = frozenset({visit_key(c.observation, "look around")})
    d = await tier.decide(c)
    assert not d.accepted and d.reason.startswith("repeat without progress")
    c.seen = frozenset({visit_key(c.observation, "go north")})  # another action: no repeat
    assert (await tier.decide(c)).accepted


async def test_constrained_voting_samples_only_actions_not_taken_in_this_state():
    """A voting rule with ``choices=`` draws among the actions not yet taken here (it
    explores instead of escalating the repeat); with every action taken here it offers
    them all and escalates the repeat it votes for."""
    from nightowl.agent.state import visit_key

    model = ScriptedModel(["go north"] * 6)  # scripted: choices are not enforced
    tier = StudentTier(model, prices=SMALL_HOSTED_PRICES, rule=Unanimity(3), avoid_repeats=True)
    c = ctx()
    c.seen = frozenset({visit_key(c.observation, "take coin")})
    d = await tier.decide(c)
    assert d.accepted and d.action == "go north" and d.meta["skipped_repeats"] == 1
    assert model.calls[-1].choices == (" go north", " look around")
    c = ctx()
    c.seen = frozenset(visit_key(c.observation, a) for a in VALID)
    d = await tier.decide(c)  # nothing new to try here: the teacher decides
    assert len(model.calls[-1].choices or ()) == 3
    assert not d.accepted and d.reason.startswith("repeat without progress")


async def test_escalate_policy_judges_every_action_and_escalates_the_repeat():
    """``repeats="escalate"``: the rule sees every valid action (voting: all choices;
    scoring: all ranked) and a repeat it accepts goes to the teacher."""
    from nightowl.agent.acceptance import LogprobMargin
    from nightowl.agent.state import visit_key

    model = ScriptedModel(["take coin"] * 3)
    tier = StudentTier(model, prices=SMALL_HOSTED_PRICES, rule=Unanimity(3), avoid_repeats=True,
                       repeats="escalate")
    c = ctx()
    c.seen = frozenset({visit_key(c.observation, "take coin")})
    d = await tier.decide(c)
    assert len(model.calls[-1].choices or ()) == 3
    assert not d.accepted and d.reason.startswith("repeat without progress")
    scored = ScriptedModel([], scores={" take coin\n": -0.1, " go north\n": -3.0,
                                       " look around\n": -8.0})
    tier = StudentTier(scored, prices=SMALL_HOSTED_PRICES, rule=LogprobMargin(1.0),
                       avoid_repeats=True, repeats="escalate")
    d = await tier.decide(c)
    assert not d.accepted and d.reason.startswith("repeat without progress")
    assert tier.describe()["repeats"] == "escalate"
    with pytest.raises(ValueError, match="repeats"):
        StudentTier(scored, prices=SMALL_HOSTED_PRICES, rule=LogprobMargin(1.0), repeats="loop")


async def test_score_rule_ranks_only_actions_not_taken_in_this_state():
    """With avoid_repeats a score rule skips an action already taken here (no model call
    more) and judges the rest; with every action taken here it escalates."""
    from nightowl.agent.acceptance import LogprobMargin
    from nightowl.agent.state import visit_key

    scores = {" take coin\n": -0.1, " go north\n": -3.0, " look around\n": -8.0}
    model = ScriptedModel([], scores=scores)
    tier = StudentTier(model, prices=SMALL_HOSTED_PRICES, rule=LogprobMargin(1.0),
                       avoid_repeats=True)
    c = ctx()
    c.seen = frozenset({visit_key(c.observation, "take coin")})
    d = await tier.decide(c)
    assert d.accepted and d.action == "go north" and d.meta["skipped_repeats"] == 1
    assert len(model.score_calls) == 1
    c = ctx()
    c.seen = frozenset(visit_key(c.observation, a) for a in VALID)
    d = await tier.decide(c)  # nothing new to try here: the teacher decides
    assert not d.accepted and d.reason.startswith("repeat without progress")
    plain = StudentTier(model, prices=SMALL_HOSTED_PRICES, rule=LogprobMargin(1.0))
    c = ctx()
    c.seen = frozenset({visit_key(c.observation, "take coin")})
    assert (await plain.decide(c)).action == "take coin"  # the guard is opt-in


ROOM = ("go north", "go west", "take coin")


async def test_score_rule_leaves_out_the_walk_back_while_another_exit_is_open():
    """After ``go east``, ``go west`` leads back: the default ``backtrack="avoid"`` does
    not score it (one action fewer in the call); ``"allow"`` ranks it first again."""
    from nightowl.agent.acceptance import LogprobMargin

    scores = {" go west\n": -0.1, " go north\n": -3.0, " take coin\n": -8.0}
    model = ScriptedModel([], scores=scores)
    tier = StudentTier(model, prices=SMALL_HOSTED_PRICES, rule=LogprobMargin(1.0))
    c = ctx(history=(("You are in the hall.", "go east"),))
    c.valid_actions = ROOM
    d = await tier.decide(c)
    assert d.accepted and d.action == "go north" and d.meta["skipped_walk_back"] == 1
    assert tier.describe()["backtrack"] == "avoid"
    allow = StudentTier(model, prices=SMALL_HOSTED_PRICES, rule=LogprobMargin(1.0),
                        backtrack="allow")
    c = ctx(history=(("You are in the hall.", "go east"),))
    c.valid_actions = ROOM
    d = await allow.decide(c)
    assert d.action == "go west" and d.meta["skipped_walk_back"] == 0
    with pytest.raises(ValueError, match="backtrack"):
        StudentTier(model, prices=SMALL_HOSTED_PRICES, rule=LogprobMargin(1.0),
                    backtrack="never")


async def test_constrained_voting_offers_no_walk_back_but_a_dead_end_walks_back():
    model = ScriptedModel(["go north"] * 3 + ["go west"] * 3)  # scripted: choices not enforced
    tier = StudentTier(model, prices=SMALL_HOSTED_PRICES, rule=Unanimity(3))
    c = ctx(history=(("You are in the hall.", "go east"),))
    c.valid_actions = ROOM
    assert (await tier.decide(c)).action == "go north"
    assert model.calls[-1].choices == (" go north", " take coin")
    c = ctx(history=(("You are in the hall.", "go east"),))
    c.valid_actions = ("go west", "take coin")  # a dead end: the way back is the only exit
    assert (await tier.decide(c)).action == "go west"
    assert model.calls[-1].choices == (" go west", " take coin")


async def test_walk_back_is_judged_after_repeats_are_left_out():
    """Exploring first drops the exit already taken here; if that was the only other
    exit, the way back stays (the student backtracks instead of stalling)."""
    from nightowl.agent.acceptance import LogprobMargin
    from nightowl.agent.state import visit_key

    scores = {" go west\n": -0.5, " go north\n": -0.1, " take coin\n": -8.0}
    model = ScriptedModel([], scores=scores)
    tier = StudentTier(model, prices=SMALL_HOSTED_PRICES, rule=LogprobMargin(1.0),
                       avoid_repeats=True)
    c = ctx(history=(("You are in the hall.", "go east"),))
    c.valid_actions = ROOM
    c.seen = frozenset({visit_key(c.observation, "go north")})
    d = await tier.decide(c)
    assert d.accepted and d.action == "go west"
    assert d.meta["skipped_repeats"] == 1 and d.meta["skipped_walk_back"] == 0
