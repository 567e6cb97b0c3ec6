"""Episode counters: who acted decides the step counter; the teacher share follows it."""

from nightowl.agent.ladder import TierDecision
from nightowl.agent.state import (
    EpisodeResult,
    count_decisions,
    new_counters,
    results_teacher_share,
    step_counter,
)
from nightowl.llm.base import Usage


def test_step_counter_by_actor():
    assert step_counter("student") == "steps_student"
    assert step_counter("teacher") == "steps_teacher"
    assert step_counter("oracle") == "steps_teacher"
    assert step_counter("bavt") == "steps_search"  # search acted: not a teacher step
    assert step_counter("fallback:oracle") == "steps_fallback"


def test_count_decisions_sums_a_steps_trail():
    stats = new_counters()
    trail = [
        TierDecision(tier="student", actor="student", samples=3, cost_usd=0.5,
                     usage=Usage(prompt_tokens=10), meta={"calls": 2, "parse_failures": 1}),
        TierDecision(tier="teacher", actor="oracle", action="go", teacher_calls=1, cost_usd=2.0),
    ]
    count_decisions(stats, trail)
    assert stats["escalations"] == 1 and stats["student_samples"] == 3
    assert stats["student_calls"] == 2 and stats["parse_failures"] == 1
    assert stats["teacher_calls"] == 1 and stats["cost_usd"] == 2.5


def _result(steps, teacher):
    stats = new_counters()
    stats["steps_teacher"] = teacher
    return EpisodeResult(run_id="r", episode_id="e", task_id="t", success=True, score=1.0,
                         steps=steps, reason="won", stats=stats, budget={})


def test_results_teacher_share_is_teacher_steps_over_env_steps():
    assert results_teacher_share([_result(4, 1), _result(6, 4)]) == 0.5
    assert results_teacher_share([]) == 0.0
