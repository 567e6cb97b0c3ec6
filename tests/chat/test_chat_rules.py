"""Chat escalation decides with the agent's acceptance rule objects, on reply votes."""

import pytest

from nightowl.chat.agreement import measure_agreement
from nightowl.chat.cascade import ChatCascade
from nightowl.distill.rules import Majority, Sequential, Unanimity, parse_rule
from nightowl.memory.embedder import HashingEmbedder

TWO_OF_THREE = ["The answer is 42.", "Final answer: 42", "The answer is 41."]
ALL_THREE = ["The answer is 42.", "Final answer: 42", "42"]


def cascade(**kw):  # the student model is not used by `accepts`
    return ChatCascade(None, None, HashingEmbedder(), n=3, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("replies", "tau", "accepted"), [
    (TWO_OF_THREE, 2 / 3, True), (TWO_OF_THREE, 1.0, False), (ALL_THREE, 1.0, True),
    (ALL_THREE, 1.5, False),  # calibration's "always escalate"
])
async def test_tau_is_majority_over_answer_votes(replies, tau, accepted):
    agreement = measure_agreement(replies, HashingEmbedder())
    assert agreement.keys == ("42", "42", "41" if replies is TWO_OF_THREE else "42")
    c = cascade(tau=tau)
    if tau <= 1:
        assert isinstance(c.rule, Majority) and c.rule.spec() == Majority(3, tau).spec()
    else:
        assert c.rule is None
    assert await c.accepts(agreement) is accepted
    # the same decision as the share rule it replaces
    assert accepted is (tau <= 1 and agreement.share + 1e-9 >= tau)


@pytest.mark.parametrize(("rule", "accepted"), [
    (Unanimity(3), False), (Majority(3, 0.6), True), (Sequential(3, 0.6), True),
    (parse_rule("unanimity:2"), True),  # the first two replies agree
])
async def test_any_registered_voting_rule_decides(rule, accepted):
    agreement = measure_agreement(TWO_OF_THREE, HashingEmbedder())
    assert await cascade(rule=rule).accepts(agreement) is accepted


async def test_meaning_clusters_are_votes():
    replies = ["Paris is lovely in spring, with parks and cafes everywhere.",
               "Paris is lovely in spring, with parks and cafes everywhere!",
               "I would rather not say anything about the weather in any city today."]
    agreement = measure_agreement(replies, HashingEmbedder(), sim=0.8)
    assert agreement.method == "meaning"
    assert agreement.keys[0] == agreement.keys[1] != agreement.keys[2]
    assert await cascade(tau=2 / 3).accepts(agreement)
    assert not await cascade(rule=Unanimity(3)).accepts(agreement)
