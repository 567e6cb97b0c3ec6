"""Calibration on states without valid actions (free text, code): sampled answer shares.

A scripted student (a fake, named as such) gives fixed shares of answers; the recorded
state must carry those shares, voting rules simulated on it must predict what voting on
those shares does, and score rules must not be candidates (nothing to score).
"""

import numpy as np
import pytest

from nightowl.app.calibrate import free_text_state
from nightowl.config import SMALL_HOSTED_PRICES
from nightowl.distill.calibrate import CalibrateOptions, candidates, evaluate_rules, simulate_state
from nightowl.distill.parser import canonical_action
from nightowl.distill.prompt import PromptBuilder
from nightowl.llm.scripted import FunctionModel

PAY = "apis.venmo.create_transaction(access_token=token, receiver_email='chloe@x.com', amount=12)"
WRONG = "apis.venmo.create_transaction(access_token=token, receiver_email='ben@x.com', amount=12)"


def scripted_student(right: int, of: int = 8) -> FunctionModel:
    """Fake: ``right`` of every ``of`` samples are PAY (reformatted), the rest WRONG."""
    answers = [PAY.replace("'", '"') if i < right else WRONG for i in range(of)]
    return FunctionModel(lambda req: answers[: req.n])


async def state(right: int, temperature: float = 0.5):
    opts = CalibrateOptions(env="appworld", temperatures=[temperature], free_text_samples=8)
    builder = PromptBuilder(action_format="code")
    return await free_text_state(scripted_student(right), builder, "Task: pay Chloe $12\nAction:",
                                 "appworld/v-venmo-pay/dev/3", 1, PAY, opts, teacher_cost=0.01)


async def test_a_free_text_state_records_answer_shares_by_syntax_tree():
    rec = await state(6)
    assert rec.free_text and rec.expert == PAY
    shares = dict(zip(rec.actions, np.exp(np.array(rec.sample_logprobs) / 0.5), strict=True))
    assert shares == pytest.approx({canonical_action(PAY): 0.75, canonical_action(WRONG): 0.25})


@pytest.mark.parametrize(("right", "accept", "wrong"), [
    (8, 1.0, 0.0),            # always the expert's code: unanimity accepts, never wrong
    (6, 0.75**3 + 0.25**3, 0.25**3),
    (0, 1.0, 1.0),            # always the same wrong code: accepted and wrong
])
async def test_unanimity_is_simulated_from_the_shares(right, accept, wrong):
    rec = await state(right)
    a, w, drawn = simulate_state(rec, "unanimity:3", 0.5, np.random.default_rng(0), 100)
    assert (a, w, drawn) == pytest.approx((accept, wrong, 3.0), abs=2e-3)


async def test_score_rules_are_not_candidates_and_a_wrong_student_cannot_pay():
    states = [await state(0)]
    opts = CalibrateOptions(env="appworld", temperatures=[0.5], ns=[1, 3], mc_draws=200)
    specs = {r.spec() for r, _ in candidates(states, opts) if r is not None}
    assert specs and not any(s.startswith(("margin", "demo")) for s in specs)
    rows = evaluate_rules(states, opts, SMALL_HOSTED_PRICES)
    teacher = next(r for r in rows if r["spec"] == "teacher")
    assert teacher["predicted_success"] == 1.0
    assert all(r["predicted_success"] == 0.0 for r in rows if r["spec"] != "teacher")
