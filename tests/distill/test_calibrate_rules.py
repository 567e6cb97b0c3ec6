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
    assert simulate_state(r, "demo-agree", 0, rng, 10) == (1.0, 0.0, 1.0)
    assert simulate_state(r, "margin+demo:1", 0, rng, 10)[0] == 0.0
    assert simulate_state(r, "margin|demo:1", 0, rng, 10)[0] == 1.0
    w = rec([-0.1, -5.0, -5.0], expert="b", demo="b")  # confident, wrong, demo disagrees
    assert simulate_state(w, "margin:1", 0, rng, 10) == (1.0, 1.0, 1.0)
    assert simulate_state(w, "demo-agree", 0, rng, 10)[:2] == (0.0, 0.0)
    assert simulate_state(rec([-1, -2, -3]), "demo-agree", 0, rng, 10)[0] == 0.0


def test_voting_rules_sample_from_summed_logprobs_score_rules_rank_by_scores():
    """Constrained sampling draws from softmax(summed log p / T), whatever ranks the scores.

    Here the per-token mean ranks the expert "a" first, but its summed log-probability
    (a longer action) is far below "b": sampling almost never picks it.
    """
    rng = np.random.default_rng(0)
    r = rec([-0.2, -0.5, -3.0])  # mean scores: "a" first by 0.3
    r_sampled = r.model_copy(update={"sample_logprobs": [-4.0, -1.0, -6.0]})
    # score rules rank by `logprobs` either way
    assert simulate_state(r, "margin:0", 0.5, rng, 10)[:2] == (1.0, 0.0)
    assert simulate_state(r_sampled, "margin:0", 0.5, rng, 10)[:2] == (1.0, 0.0)
    # unanimity:1 at T=0.5 accepts every sample; P(wrong) = 1 - P(sample "a")
    wrong_mean = simulate_state(r, "unanimity:1", 0.5, rng, 10)[1]
    wrong_sum = simulate_state(r_sampled, "unanimity:1", 0.5, rng, 10)[1]
    assert wrong_mean < 0.4 and wrong_sum > 0.99


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


# ------------------------------------------------------------------- dev rollouts
from nightowl.distill.calibrate import (  # noqa: E402
    frontier,
    next_probe,
    recommend_measured,
    repeat_policy,
    required_saving,
    success_lower_bound,
)


def row(spec, cost, acc, success=1.0, t=0.0):
    return {"rule": spec, "spec": spec, "temperature": t, "predicted_success": success,
            "predicted_cost_per_episode": cost, "student_acceptance": acc,
            "samples_per_step": 1.0}


def test_frontier_keeps_rules_whose_success_rises_with_cost():
    rows = [row("teacher", 1.0, 0.0), row("unanimity:1", 0.09, 1.0, 0.2),
            row("margin:0", 0.1, 1.0, 0.3), row("margin:0.5", 0.2, 0.9, 0.5),
            row("margin:1", 0.4, 0.7, 0.95), row("margin:2", 0.6, 0.5, 1.0),
            row("margin:4", 0.9, 0.1, 1.0),
            row("demo-agree", 0.21, 0.9, 0.4)]  # dearer than margin:0.5 and less successful
    # margin:4 is left out: 0.9 > 1.0 / 1.2 cannot save enough to be worth a try
    assert [r["spec"] for r in frontier(rows, 1.2)] == [
        "unanimity:1", "margin:0", "margin:0.5", "margin:1", "margin:2"]
    assert frontier([row("teacher", 1.0, 0.0), row("margin:9", 0.95, 0.05)], 1.2) == []


def probes(pool, chosen, passes, budget=99):
    """Indices `next_probe` plays when rule i keeps success iff passes(i)."""
    played: dict[int, bool] = {}
    while len(played) < budget and (i := next_probe(pool, chosen, played)) is not None:
        assert i not in played
        played[i] = passes(i)
    return played


def test_next_probe_finds_the_cheapest_passing_rule_by_bisection():
    pool = [row(f"margin:{i}", 0.1 * (i + 1), 1 - 0.1 * i, 0.1 * i) for i in range(9)]
    chosen = pool[8]
    for cut in range(9):  # rules >= cut keep success
        played = probes(pool, chosen, lambda i, c=cut: i >= c, budget=5)
        # cheapest, chosen, then log2(9) bisection steps find the cut within 5 rollouts
        assert min(i for i, ok in played.items() if ok) == cut
    # then the rules just above the cheapest passing one (measured cost may be lower)
    assert list(probes(pool, chosen, lambda i: True, budget=3)) == [0, 1, 2]
    assert list(probes(pool, chosen, lambda i: i >= 3, budget=6)) == [0, 8, 4, 2, 3, 5]
    # nothing passes: cheapest, chosen, then the frontier's end (here the chosen) -> stop
    assert probes(pool, pool[4], lambda i: False) == {0: False, 4: False, 8: False}
    assert next_probe([], chosen, {}) is None


def dev(spec, success, cost, episodes=3):
    return {"rule": spec, "spec": spec, "temperature": 0.0, "dev_success": success,
            "dev_cost_per_episode": cost, "dev_episodes": episodes,
            "dev_successes": round(success * episodes)}


def test_recommend_measured_takes_the_cheapest_rule_that_keeps_success():
    teacher = dev("teacher", 1.0, 1.0)
    measured = [dev("margin:0", 2 / 3, 0.1), dev("margin:1", 1.0, 0.3), dev("margin:2", 1.0, 0.5)]
    out = recommend_measured(measured, teacher, 0.9, 1.2)
    assert out["student_pays"] and out["chosen"]["spec"] == "margin:1"
    assert abs(out["saving"] - 1 / 0.3) < 1e-9 and "student pays" in out["verdict"]


def test_recommend_measured_falls_back_to_teacher_when_saving_is_noise():
    teacher = dev("teacher", 1.0, 1.0)
    out = recommend_measured([dev("margin:1", 1.0, 0.9), dev("margin:0", 0.5, 0.2)],
                             teacher, 0.9, 1.2)
    assert not out["student_pays"] and out["chosen"]["spec"] == "teacher"
    assert out["saving"] == 1.0 and "cannot pay" in out["verdict"] and "margin:0: 50%" in out[
        "verdict"]


def test_success_lower_bound_is_the_one_sided_clopper_pearson_bound():
    # all won: the bound solves p**n = 1 - confidence
    assert abs(success_lower_bound(3, 3, 0.8) - 0.2 ** (1 / 3)) < 1e-9
    assert abs(success_lower_bound(8, 8, 0.8) - 0.2 ** (1 / 8)) < 1e-9
    # one lost of 10: P(X >= 9 | p) = 1 - confidence at the bound
    p = success_lower_bound(9, 10, 0.8)
    assert abs(p ** 10 + 10 * p ** 9 * (1 - p) - 0.2) < 1e-9
    assert success_lower_bound(0, 3, 0.8) == 0.0 and success_lower_bound(2, 3, 0.0) == 2 / 3
    # more evidence, higher bound; more confidence, lower bound
    assert success_lower_bound(3, 3, 0.8) < success_lower_bound(8, 8, 0.8)
    assert success_lower_bound(3, 3, 0.9) < success_lower_bound(3, 3, 0.8)


def test_required_saving_covers_the_success_a_few_dev_episodes_cannot_rule_out():
    teacher = dev("teacher", 1.0, 1.0)
    assert abs(required_saving(dev("r", 1.0, 0.5, 3), teacher, 1.2, 0.8) - 0.2 ** (-1 / 3)) < 1e-9
    assert abs(required_saving(dev("r", 1.0, 0.5, 8), teacher, 1.2, 0.8) - 0.2 ** (-1 / 8)) < 1e-9
    # with many won episodes the bound is above 1 / min_saving: the floor decides
    assert required_saving(dev("r", 1.0, 0.5, 60), teacher, 1.2, 0.8) == 1.2
    assert required_saving(dev("r", 1.0, 0.5, 3), teacher, 1.2, 0.0) == 1.2
    assert required_saving(dev("r", 0.0, 0.5, 3), teacher, 1.2, 0.8) == float("inf")


def test_recommend_measured_refuses_a_saving_three_dev_episodes_cannot_back():
    """TextWorld cooking, issue 13: a rule won 3/3 dev episodes at 1.57x lower cost and
    won 6/8 test episodes at 1.07x. At 80% confidence 3/3 may be a 58% rule: its cost
    of pass could be above teacher-only's, so the student does not pay on that
    evidence; the same saving over 8 won episodes does."""
    teacher = dev("teacher", 1.0, 1.0)
    out = recommend_measured([dev("majority:3:0.6", 1.0, 1 / 1.57)], teacher, 0.9, 1.2, 0.8)
    assert not out["student_pays"] and out["chosen"]["spec"] == "teacher"
    assert "at 1.57x (needs 1.71x)" in out["verdict"] and "80% confidence" in out["verdict"]
    assert recommend_measured([dev("majority:3:0.6", 1.0, 1 / 1.57)], teacher, 0.9, 1.2,
                              0.0)["student_pays"]  # the observed success alone: pays
    out = recommend_measured([dev("majority:3:0.6", 1.0, 1 / 1.57, episodes=8)], teacher,
                             0.9, 1.2, 0.8)
    assert out["student_pays"] and out["chosen"]["spec"] == "majority:3:0.6"
    # a large saving pays on 3 episodes too (simonsays, mapreader: 16x - 115x)
    assert recommend_measured([dev("unanimity:1", 1.0, 0.05)], teacher, 0.9, 1.2,
                              0.8)["student_pays"]


def test_open_loop_recommend_needs_the_minimum_saving():
    rows = [row("teacher", 1.0, 0.0), row("margin:1", 0.9, 0.2, 1.0)]
    assert recommend(rows, 0.9)["student_pays"]
    out = recommend(rows, 0.9, min_saving=1.2)
    assert not out["student_pays"] and out["chosen"]["spec"] == "teacher"


def test_repeat_policy_explores_only_where_the_first_rule_kept_success():
    """A student exploring instead of repeating keeps doing so where that lost nothing on
    dev; where it lost episodes (a wrong move is fatal) repeats go to the teacher."""
    teacher = dev("teacher", 1.0, 1.0)
    assert repeat_policy(dev("unanimity:1", 1.0, 0.01), teacher, 0.9) == "explore"
    assert repeat_policy(dev("unanimity:1", 2 / 3, 0.01), teacher, 0.9) == "escalate"
    # relative to teacher-only's dev success, not to 100%
    assert repeat_policy(dev("unanimity:1", 0.5, 0.01), dev("teacher", 0.5, 1.0), 0.9) == (
        "explore")
