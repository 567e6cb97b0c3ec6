import math

import pytest

from nightowl.agent.acceptance import (
    LogprobMargin,
    Majority,
    Sequential,
    Unanimity,
    parse_rule,
    tally,
)
from nightowl.errors import ConfigError


def stream(answers):
    it = iter(answers)
    drawn = []

    async def draw(k):
        out = [next(it) for _ in range(k)]
        drawn.append(k)
        return out

    return draw, drawn


async def test_unanimity_normalises_before_voting():
    draw, drawn = stream(["Go North.", "go north", " GO  NORTH"])
    v = await Unanimity(3).judge(draw)
    assert v.accepted and v.action == "go north" and v.samples == 3 and drawn == [3]


async def test_unanimity_rejects_disagreement_and_failures():
    draw, _ = stream(["go north", None, "go north"])
    v = await Unanimity(3).judge(draw)
    assert not v.accepted and "unparseable" in v.reason


async def test_majority_threshold():
    draw, _ = stream(["a", "a", "a", "b", "c"])
    assert (await Majority(5, 0.6).judge(draw)).action == "a"
    draw, _ = stream(["a", "a", "b", "b", "c"])
    v = await Majority(5, 0.6).judge(draw)
    assert not v.accepted and v.candidates[0] == ("a", 2.0)


async def test_sequential_stops_early_when_certain():
    draw, drawn = stream(["a", "a", "a", "x", "x"])
    v = await Sequential(5, 0.6).judge(draw)
    assert v.accepted and v.action == "a" and v.samples == 3 and sum(drawn) == 3


async def test_sequential_unanimity_stops_at_first_disagreement():
    draw, drawn = stream(["a", "b", "a", "a", "a"])
    v = await Sequential(5, 1.0).judge(draw)
    assert not v.accepted and v.samples == 2 and "impossible" in v.reason


async def test_sequential_matches_majority_verdict():
    import random

    rng = random.Random(1)
    for _ in range(200):
        answers = [rng.choice("abc") for _ in range(5)]
        d1, _ = stream(answers)
        d2, drawn = stream(answers)
        m = await Majority(5, 0.6).judge(d1)
        s = await Sequential(5, 0.6).judge(d2)
        assert m.action == s.action
        assert sum(drawn) <= 5


def test_margin_rule():
    r = LogprobMargin(1.0)
    v = r.judge_scores(["take coin", "go north", "look"], [-0.5, -2.0, -3.0])
    assert v.accepted and v.action == "take coin" and v.samples == 1
    assert math.isclose(sum(p for _, p in v.candidates), 1.0)
    v = r.judge_scores(["take coin", "go north"], [-1.0, -1.5])
    assert not v.accepted and "margin 0.50" in v.reason
    assert r.judge_scores(["only"], [-9.0]).accepted  # one option: infinite margin
    assert not r.judge_scores([], []).accepted


def test_tally_ignores_failures():
    assert tally([None, "A", "a ", "b"]) == (("a", 2.0), ("b", 1.0))


def test_parse_rule():
    assert isinstance(parse_rule("unanimity:3"), Unanimity)
    assert parse_rule("majority:5:0.6").need == 3
    assert parse_rule("sequential:4:0.75").need == 3
    assert parse_rule("margin:2").threshold == 2
    with pytest.raises(ConfigError):
        parse_rule("bogus")
    with pytest.raises(ConfigError):
        parse_rule("majority:x")


def test_demo_agreement_rules():
    from nightowl.agent.acceptance import DemoAgreement, parse_rule

    acts, lps = ["take coin", "go north"], [-0.2, -0.9]
    agree = parse_rule("demo-agree")
    assert agree.uses_demos and agree.uses_scores
    assert agree.judge_scores(acts, lps, demo_action="Take coin.").action == "take coin"
    assert not agree.judge_scores(acts, lps, demo_action="go north").accepted
    assert not agree.judge_scores(acts, lps).accepted  # no demo: escalate
    both = parse_rule("margin+demo:1.0")
    assert isinstance(both, DemoAgreement) and both.mode == "and"
    assert not both.judge_scores(acts, lps, demo_action="take coin").accepted
    either = parse_rule("margin|demo:0.5")
    assert either.judge_scores(acts, lps, demo_action=None).accepted  # margin 0.7 >= 0.5
    assert either.judge_scores(acts, [-0.5, -0.6], demo_action="take coin").accepted
    assert not either.judge_scores(acts, [-0.5, -0.6], demo_action="go north").accepted
