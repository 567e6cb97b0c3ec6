import asyncio

import pytest

from nightowl.config import Prices
from nightowl.ledger import CallSite, Ledger, MeteredModel, PendingWrites, as_metered
from nightowl.llm.base import GenerationRequest, ModelBackend

try:
    from nightowl.llm.scripted import ScriptedModel
except ModuleNotFoundError:  # pragma: no cover - engineer "llm" ships it
    ScriptedModel = None  # type: ignore[assignment,misc]

pytestmark = pytest.mark.skipif(ScriptedModel is None, reason="nightowl.llm.scripted missing")

PER_TOKEN = Prices(input=1_000_000, cached_input=500_000, output=2_000_000)  # $1 / $0.5 / $2


def _req(prompt: str = "one two three", n: int = 1) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, n=n, max_tokens=16)


async def test_records_calls_and_failures(db):
    ledger = Ledger(db)
    run = ledger.start_run("metered", "eval")
    eid = ledger.start_episode(run, "t/1", "tw", "dev")
    backend = ScriptedModel(["go north", "take key lamp", ValueError("boom")], name="fake")
    model = MeteredModel(backend, ledger, PER_TOKEN, run_id=run, role="student")
    assert isinstance(model, ModelBackend)
    res = await model.bind(CallSite(episode_id=eid, step=0)).generate(_req())
    assert res.texts == ["go north"]
    res = await model.bind(episode_id=eid, step=1, role="teacher").generate(_req("a b"))
    assert res.texts == ["take key lamp"]
    with pytest.raises(ValueError, match="boom"):
        await model.bind(CallSite(episode_id=eid, step=2)).generate(_req())
    calls = ledger.model_calls(run)
    assert [(c.role, c.step, c.ok) for c in calls] == [
        ("student", 0, True), ("teacher", 1, True), ("student", 2, False)
    ]
    first, second, failed = calls
    assert (first.prompt_tokens, first.completion_tokens) == (3, 2)
    assert first.cost_usd == 3 * 1 + 2 * 2
    assert second.cost_usd == 2 * 1 + 3 * 2
    assert first.model == "fake" and first.episode_id == eid
    assert failed.meta["error"] == "ValueError: boom"
    assert failed.cost_usd == 0.0 and failed.prompt_tokens == 0
    r = ledger.run_report(run)
    assert r.failed_model_calls == 1
    assert r.teacher_call_share == 1 / 3
    assert r.total_cost == 15.0


async def test_scoring_and_token_counting_pass_through(db):
    ledger = Ledger(db)
    run = ledger.start_run("score", "eval")
    backend = ScriptedModel([], scores={"yes": -0.5, "no": -2.0}, name="fake")
    model = MeteredModel(backend, ledger, PER_TOKEN, run_id=run, role="critic")
    scored = await model.bind(step=4).score_continuations("is it ok ?", ["yes", "no"])
    assert scored.logprobs == (-0.5, -2.0)
    assert model.count_tokens("a b c d") == 4
    [call] = ledger.model_calls(run)
    assert (call.kind, call.role, call.step, call.ok) == ("score", "critic", 4, True)
    assert call.prompt_tokens == scored.usage.prompt_tokens
    assert call.cost_usd == scored.usage.prompt_tokens * 1.0
    r = ledger.run_report(run)
    assert r.roles["critic"].score_calls == 1 and r.acting_calls == 0


async def test_concurrent_tasks_lose_nothing(db):
    ledger = Ledger(db)
    run = ledger.start_run("gather", "eval")
    backend = ScriptedModel(["ok"], cycle=True, delay_s=0.001)
    student = MeteredModel(backend, ledger, PER_TOKEN, run_id=run, role="student")
    teacher = student.with_role("teacher")
    await asyncio.gather(
        *(student.bind(step=i).generate(_req()) for i in range(20)),
        *(teacher.bind(step=i).generate(_req()) for i in range(5)),
    )
    r = ledger.run_report(run)
    assert r.model_calls == 25
    assert (r.teacher_calls, r.acting_calls) == (5, 25)
    assert r.teacher_call_share == 0.2


async def test_cancelled_call_is_recorded(sqlite_db):
    ledger = Ledger(sqlite_db)
    run = ledger.start_run("cancel", "eval")
    backend = ScriptedModel(["late"], delay_s=10)
    model = MeteredModel(backend, ledger, PER_TOKEN, run_id=run, role="student")
    task = asyncio.create_task(model.generate(_req()))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [call] = ledger.model_calls(run)
    assert not call.ok and call.meta["error"].startswith("CancelledError")


async def test_pending_writes_are_queued_until_flushed(db):
    ledger = Ledger(db)
    run = ledger.start_run("pending", "eval")
    eid = ledger.start_episode(run, "t/1", "tw", "dev")
    model = MeteredModel(ScriptedModel(["a"], cycle=True), ledger, PER_TOKEN, run_id=run,
                         role="student")
    pending = PendingWrites()
    bound = model.bind(CallSite(episode_id=eid, step=3, pending=pending))
    await bound.generate(_req())
    await bound.with_role("critic").generate(_req())
    assert ledger.model_calls(run) == [] and len(pending.rows) == 2
    ledger.write_rows(pending.take())
    calls = ledger.model_calls(run)
    assert [(c.role, c.step, c.episode_id) for c in calls] == [
        ("student", 3, eid), ("critic", 3, eid)
    ]
    assert pending.rows == []


async def test_unmetered_backend_records_nothing():
    backend = ScriptedModel(["x"], name="plain")
    model = as_metered(backend, role="student")
    assert model.ledger is None and as_metered(model, role="teacher") is model
    res = await model.bind(step=1).generate(_req())
    assert res.texts == ["x"]
