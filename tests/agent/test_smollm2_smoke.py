"""One fast smoke test with the real embedded student (a few steps)."""

import pytest

from nightowl.agent.acceptance import LogprobMargin, Unanimity
from nightowl.agent.budget import EpisodeBudget
from nightowl.agent.graph import AgentGraph, LoopConfig
from nightowl.agent.ladder import Ladder
from nightowl.agent.tiers import OracleTier, StudentTier
from nightowl.config import FRONTIER_PRICES, SMALL_HOSTED_PRICES
from nightowl.envs.registry import make_env
from nightowl.ledger import MeteredModel


@pytest.fixture(scope="module")
def smollm2():
    from nightowl.llm.registry import build_backend

    try:
        return build_backend("smollm2")
    except Exception as exc:  # pragma: no cover - weights missing on this machine
        pytest.skip(f"embedded model unavailable: {exc}")


async def test_real_student_three_steps(smollm2, ledger, twx_coin_tasks):
    run = ledger.start_run("smoke", "test", {})
    student = MeteredModel(smollm2, ledger, SMALL_HOSTED_PRICES, run_id=run, role="student")
    ladder = Ladder(
        [
            StudentTier(
                student,
                prices=SMALL_HOSTED_PRICES,
                rule=Unanimity(2),
                temperature=0.5,
                avoid_repeats=True,
            ),
            StudentTier(
                student, prices=SMALL_HOSTED_PRICES, rule=LogprobMargin(0.5), name="student-margin"
            ),
            OracleTier(ledger=ledger, prices=FRONTIER_PRICES, tokenizer=smollm2),
        ]
    )
    g = AgentGraph(
        ladder=ladder,
        env_factory=lambda: make_env("twx"),
        ledger=ledger,
        config=LoopConfig(budget=EpisodeBudget(max_steps=3), retrieve=False),
        env_name="twx",
    )
    r = await g.run_episode(run_id=run, task_id=twx_coin_tasks["test"][1], split="test")
    assert r.steps >= 1
    calls = ledger.model_calls(run)
    student_calls = [c for c in calls if c.role == "student"]
    assert student_calls and all(c.prompt_tokens > 50 for c in student_calls)
    # the constrained student only ever acted with valid actions
    rep = ledger.run_report(run)
    assert rep.n_episodes == 1
