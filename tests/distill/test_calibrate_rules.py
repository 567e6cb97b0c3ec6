"""Calibration's pure functions with the demo-agreement rules and the teacher-only option."""

import numpy as np

from nightowl.config import SMALL_HOSTED_PRICES
from nightowl.distill.calibrate import (
    CalibrateOptions,
    StateRecord,
    evaluate_rules,
    recommend,
    simulate_state,
)


def rec(lps, expert="a", demo=None, task="t1", step=0):
    return StateRecord(task_id=task, step=step, actions=["a", "b", "c"], logprobs=lps,
                       expert=expert, prompt_tokens=500, choice_tokens=2.0,
                       teacher_cost=0.01, demo_action=demo)


def test_simulate_demo_rules():
    rng = np.random.default_rng(0)
    r = rec([-0.1, -0.5, -5.0], demo="a")  # small margin, demo agrees, right
    assert simulate_state(r, "demo", 1, 1, 0, 0, rng, 10) == (1.0, 0.0, 1.0)
    assert simulate_state(r, "margin+demo", 1, 1, 0, 1.0, rng, 10)[0] == 0.0
    assert simulate_state(r, "margin|demo", 1, 1, 0, 1.0, rng, 10)[0] == 1.0
    w = rec([-0.1, -5.0, -5.0], expert="b", demo="b")  # confident, wrong, demo disagrees
    assert simulate_state(w, "margin", 1, 1, 0, 1.0, rng, 10) == (1.0, 1.0, 1.0)
    assert simulate_state(w, "demo", 1, 1, 0, 0, rng, 10)[:2] == (0.0, 0.0)
    assert simulate_state(rec([-1, -2, -3]), "demo", 1, 1, 0, 0, rng, 10)[0] == 0.0


def opts():
    return CalibrateOptions(env="twx", tasks=2, temperatures=[0.5], ns=[1, 3], taus=[1.0],
                            margins=[0.0, 2.0], mc_draws=200)


def test_student_pays_when_demo_agreement_is_precise():
    states = [rec([-0.1, -0.3, -4.0], demo="a", task=f"t{i}", step=j)
              for i in range(3) for j in range(4)]
    rows = evaluate_rules(states, opts(), SMALL_HOSTED_PRICES)
    specs = {r["spec"] for r in rows}
    assert {"demo-agree", "margin+demo:2", "margin|demo:0", "teacher"} <= specs
    out = recommend(rows, 0.9)
    assert out["student_pays"] and out["chosen"]["spec"] != "teacher"
    assert out["saving"] > 3 and "student pays" in out["verdict"]


def test_teacher_only_when_the_student_is_confidently_wrong():
    states = [rec([-0.1, -6.0, -6.0], expert="b", demo="a", task=f"t{i}", step=j)
              for i in range(3) for j in range(4)]
    rows = evaluate_rules(states, opts(), SMALL_HOSTED_PRICES)
    out = recommend(rows, 0.8)
    assert not out["student_pays"] and out["chosen"]["spec"] == "teacher"
    assert "teacher only" in out["verdict"]
    teacher = next(r for r in rows if r["spec"] == "teacher")
    assert abs(teacher["predicted_cost_per_episode"] - 4 * 0.01) < 1e-9
