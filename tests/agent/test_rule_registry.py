"""One registry of acceptance rules: a new rule is one class, registered in one place.

The toy rule `Always` below is defined and registered in this file only; from there it
parses from ``--rule always``, decides live steps in a ladder preset's student tier and is
simulated by calibration, with the builtin rules' numbers untouched.
"""

import numpy as np
import pytest

from nightowl.agent.acceptance import (
    RULES,
    AcceptanceRule,
    Verdict,
    parse_rule,
    register,
    rule_syntax,
    tally,
)
from nightowl.agent.budget import Budget
from nightowl.agent.ladder import StepContext
from nightowl.agent.presets import PRESETS, build_ladder, ladder_syntax, preset_for_rule
from nightowl.config import SMALL_HOSTED_PRICES, ModelSpec, load_settings
from nightowl.distill.calibrate import (
    CalibrateOptions,
    StateRecord,
    candidates,
    evaluate_rules,
    simulate_state,
)
from nightowl.errors import ConfigError
from nightowl.llm.scripted import FunctionModel


class Always(AcceptanceRule):
    """Act on the student's one sample, whatever it says."""

    kinds = ("always",)
    syntax = ("always",)
    name = "always"

    @classmethod
    def parse(cls, kind, args):
        return cls()

    def spec(self):
        return "always"

    @classmethod
    def candidates(cls, opts, states, n):
        return [cls()] if n == 1 else []

    async def judge(self, draw):
        cands = tally((await draw(1))[:1])
        return Verdict(action=cands[0][0] if cands else None, confidence=1.0, samples=1,
                       candidates=cands, reason="always")

    def simulate(self, rec, rng, draws, temperature):
        # accepts its one sample: wrong unless the sample is the expert's action
        lp = np.array(rec.sample_logprobs or rec.logprobs) / max(temperature, 1e-6)
        p = np.exp(lp - lp.max())
        p /= p.sum()
        right = sum(q for a, q in zip(rec.actions, p, strict=True) if a == rec.expert)
        return 1.0, 1.0 - float(right), 1.0


@pytest.fixture()
def always():
    register(Always)
    yield Always
    RULES.remove(Always)


def rec(task="t1", step=0):
    return StateRecord(task_id=task, step=step, actions=["take coin", "go north"],
                       logprobs=[-0.1, -2.5], expert="take coin", prompt_tokens=400,
                       choice_tokens=2.0, teacher_cost=0.01, demo_action="take coin")


def test_a_registered_rule_parses_and_is_listed(always):
    rule = parse_rule("Always")
    assert isinstance(rule, Always) and rule.spec() == "always"
    assert rule_syntax().endswith("| always")
    assert preset_for_rule("always") == "cascade"  # a sampling rule runs on the cascade
    with pytest.raises(ValueError, match="taken"):
        register(type("Clash", (Always,), {"kinds": ("unanimity",)}))


async def test_a_registered_rule_decides_live_steps_in_a_ladder(always, tmp_path):
    base = load_settings(home=tmp_path)
    models = {**base.models, "fake": ModelSpec(
        backend="scripted", params={"function": "tests.agent.fakes:first_choice"},
        prices=base.models["smollm2"].prices)}
    settings = load_settings(home=tmp_path, models=models, student_model="fake")
    model = FunctionModel(lambda req: "take coin")
    ladder = build_ladder("cascade", settings=settings, ledger=None, run_id="r",
                          student_backend=lambda name: model, rule="always")
    assert isinstance(ladder.tiers[0].rule, Always)
    ctx = StepContext(run_id="r", episode_id="e", task_id="t/x/test/1", step=0,
                      goal="find the coin", observation="A coin.",
                      valid_actions=("go north", "take coin"), budget=Budget())
    out = await ladder.decide(ctx)
    assert out.action == "take coin" and out.decision.tier == "student"
    assert [r.n for r in model.calls] == [1]


def test_a_registered_rule_is_simulated_by_calibration(always):
    states = [rec(f"t{i}", j) for i in range(2) for j in range(3)]
    a, w, drawn = simulate_state(states[0], "always", 0.5, np.random.default_rng(0), 10)
    assert a == 1.0 and drawn == 1.0 and 0 < w < 0.01
    opts = CalibrateOptions(env="twx", temperatures=[0.5], ns=[1, 3], taus=[0.6, 1.0],
                            margins=[0.0, 2.0], mc_draws=200)
    assert [r.spec() for r, _ in candidates(states, opts) if isinstance(r, Always)] == ["always"]
    rows = evaluate_rules(states, opts, SMALL_HOSTED_PRICES)
    [row] = [r for r in rows if r["spec"] == "always"]
    assert row["rule"] == "always @T=0.5" and row["student_acceptance"] == 1.0
    RULES.remove(Always)
    try:  # every other candidate's numbers are the same without it
        assert [r for r in rows if r["spec"] != "always"] == evaluate_rules(
            states, opts, SMALL_HOSTED_PRICES)
    finally:
        RULES.append(Always)


@pytest.mark.parametrize("spec", ["unanimity:3", "majority:5:0.6", "sequential:4:0.75",
                                  "sequential:5:1:2", "margin:1.5", "demo-agree",
                                  "margin+demo:1", "margin|demo:3"])
def test_specs_round_trip(spec):
    assert parse_rule(spec).spec() == spec
    assert parse_rule(parse_rule(spec).spec()).describe() == parse_rule(spec).describe()


def test_every_calibration_candidate_is_a_runnable_spec():
    states = [rec(f"t{i}", j) for i in range(2) for j in range(2)]
    for row in evaluate_rules(states, CalibrateOptions(env="twx", mc_draws=40),
                              SMALL_HOSTED_PRICES):
        if row["spec"] != "teacher":
            assert parse_rule(row["spec"]).spec() == row["spec"]


def test_unknown_rule_lists_the_registry():
    with pytest.raises(ConfigError, match="margin\\|demo:T") as info:
        parse_rule("bogus")
    assert "unanimity:N, majority:N:TAU" in str(info.value)


def test_cli_help_comes_from_the_registries():
    from nightowl.cli import _options

    assert rule_syntax() in _options.RULE.help
    assert _options.LADDER.help == ladder_syntax() == "|".join(PRESETS)
    assert "demo-agree" in _options.RULE.help and "bavt" in _options.LADDER.help
