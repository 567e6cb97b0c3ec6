"""Store, idempotent jobs, freshness, the answer path and the in-process runner.

Real SQLite through `open_db` (migrations); the model is a scripted fake.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from nightowl.config_sleep import GeneratorConfig
from nightowl.errors import UnknownNameError, UserError
from nightowl.llm.base import GenerationRequest
from nightowl.llm.scripted import FunctionModel, ScriptedModel, last_user_message
from nightowl.sleeptime.idle import ProbeReading
from nightowl.sleeptime.policy import needing_refresh, refresh_reason
from nightowl.sleeptime.runner import run_jobs
from nightowl.sleeptime.schema import utcnow
from nightowl.sleeptime.store import Progress

CTX = "Tom has 3 apples. Ann has twice as many apples as Tom."


def notes_model() -> FunctionModel:
    """Writes notes on sleep prompts, answers 'Answer: 6' on queries (a fake)."""

    def fn(req: GenerationRequest) -> str:
        user = last_user_message(req)
        if user.startswith("Text:") and "Question:" not in user:
            return "Ann has 6 apples.\nQ: How many apples does Ann have?\nA: 6"
        return "Answer: 6"

    return FunctionModel(fn, name="fake-notes")


def test_context_lookup_by_id_prefix_and_name(make_service) -> None:  # type: ignore[no-untyped-def]
    svc = make_service(notes_model())
    ctx = svc.store.add_context(CTX, name="apples")
    assert svc.store.get(ctx.id) == ctx
    assert svc.store.get(ctx.id[:6]).id == ctx.id
    assert svc.store.get("apples").id == ctx.id
    with pytest.raises(UnknownNameError):
        svc.store.get("nope")
    with pytest.raises(UserError, match="kind"):
        svc.store.add_context("x", kind="video")
    with pytest.raises(UserError, match="empty"):
        svc.store.add_context("   ")


def test_learn_is_idempotent_and_recorded_in_ledger(make_service) -> None:  # type: ignore[no-untyped-def]
    model = notes_model()
    svc = make_service(model, max_rounds=1)
    ctx = svc.store.add_context(CTX)
    first = svc.learn_sync(ctx.id)
    assert first.status == "stored" and first.rounds == 1
    again = svc.learn_sync(ctx.id)
    assert again.status == "exists" and again.learned_id == first.learned_id
    assert len(model.calls) == 1
    assert svc.store.count_learned(ctx.id) == 1
    learned = svc.store.learned_for(ctx.id)[0]
    assert learned.qa == [{"q": "How many apples does Ann have?", "a": "6"}]
    # every sleep call is in the ledger with role "sleep"
    runs = svc.ledger.list_runs(kind="sleep")
    calls = svc.ledger.model_calls(runs[0].run_id)
    assert [c.role for c in calls] == ["sleep"]


def test_concurrent_claims_one_winner_and_stale_takeover(make_service) -> None:  # type: ignore[no-untyped-def]
    svc = make_service(notes_model())
    ctx = svc.store.add_context(CTX)
    cfg = GeneratorConfig(model="fake")
    a = svc.store.claim(ctx, cfg, worker="a", lease_s=60)
    b = svc.store.claim(ctx, cfg, worker="b", lease_s=60)
    assert a.claimed and not b.claimed and b.learned.claimed_by == "a"
    progress = Progress(text="p", qa=[], rounds=1, prompt_tokens=1, completion_tokens=1, cost_usd=0)
    assert svc.store.save_progress(a.learned.id, "a", progress)
    # a's heartbeat goes stale: b takes over and resumes from a's progress
    later = utcnow() + timedelta(seconds=61)
    c = svc.store.claim(ctx, cfg, worker="b", lease_s=60, now=later)
    assert c.claimed and c.learned.rounds == 1 and c.learned.text == "p"
    assert not svc.store.finish(a.learned.id, "a", progress)  # a lost its claim
    assert svc.store.finish(a.learned.id, "b", progress)
    assert svc.store.count_learned(ctx.id, state=None) == 1


def test_held_job_is_deferred_not_run(make_service) -> None:  # type: ignore[no-untyped-def]
    model = notes_model()
    svc = make_service(model, lease_s=60)
    ctx = svc.store.add_context(CTX)
    svc.store.claim(ctx, svc.sleep.generator(), worker="other", lease_s=60)
    out = svc.learn_sync(ctx.id)
    assert out.status == "held" and 1 <= out.retry_in_s <= 61 and model.calls == []


def test_changed_context_invalidates_learned_context(make_service) -> None:  # type: ignore[no-untyped-def]
    model = notes_model()
    svc = make_service(model, max_rounds=1, refresh_after_changes=2, idle_refresh_s=3600)
    ctx = svc.store.add_context(CTX, kind="conversation")
    svc.learn_sync(ctx.id)
    res = svc_ask(svc, ctx.id)
    assert res.used_learned and res.learned_status == "fresh"
    assert "Notes prepared in advance" in model.calls[-1].messages[-1].content

    ctx2 = svc.store.append(ctx.id, "User: and Bob has 2.")
    assert ctx2.revision == 2 and ctx2.content_hash != ctx.content_hash
    res = svc_ask(svc, ctx.id)
    assert not res.used_learned and res.learned_status == "stale" and res.mode == "none"
    assert "Notes prepared in advance" not in model.calls[-1].messages[-1].content
    # one change: not yet refreshed (threshold 2); two changes: refresh
    assert refresh_reason(svc.store, ctx2, svc.sleep) is None
    ctx3 = svc.store.append(ctx.id, "User: and Cid has 1.")
    assert refresh_reason(svc.store, ctx3, svc.sleep) == "stale: 2 changes"
    # ...or when the conversation has been quiet long enough
    quiet = utcnow() + timedelta(seconds=3601)
    assert refresh_reason(svc.store, ctx2, svc.sleep, now=quiet).startswith("stale: quiet")
    out = svc.learn_sync(ctx.id)
    assert out.status == "stored"
    versions = [lc.version for lc in svc.store.learned_for(ctx.id)]
    assert versions == [2, 1]
    assert svc_ask(svc, ctx.id).learned_status == "fresh"
    assert needing_refresh(svc.store, svc.sleep) == []


def svc_ask(svc, ref, **kw):  # type: ignore[no-untyped-def]
    import asyncio

    return asyncio.run(svc.ask(ref, "How many apples does Ann have?", **kw))


def test_answer_falls_back_without_learned_context(make_service) -> None:  # type: ignore[no-untyped-def]
    model = notes_model()
    svc = make_service(model)
    ctx = svc.store.add_context(CTX)
    res = svc_ask(svc, ctx.id, budget="low")
    assert res.learned_status == "missing" and not res.used_learned
    assert res.final == "6" and model.calls[-1].max_tokens == 24
    assert CTX in model.calls[-1].messages[-1].content
    assert svc.store.query_counts() == {ctx.id: 1}
    with pytest.raises(UserError, match="budget"):
        svc_ask(svc, ctx.id, budget="huge")


def test_instead_mode_drops_the_context(make_service) -> None:  # type: ignore[no-untyped-def]
    model = notes_model()
    svc = make_service(model, max_rounds=1)
    ctx = svc.store.add_context(CTX)
    svc.learn_sync(ctx.id)
    res = svc_ask(svc, ctx.id, mode="instead", budget="high")
    prompt = model.calls[-1].messages[-1].content
    assert res.used_learned and res.mode == "instead"
    assert CTX not in prompt and "Ann has 6 apples." in prompt
    assert model.calls[-1].max_tokens == 256


class FlakyProbe:
    def __init__(self, busy_checks: int) -> None:
        self.left = busy_checks

    def check(self) -> ProbeReading:
        self.left -= 1
        return ProbeReading(idle=self.left < 0, reason="test probe")


def test_in_process_runner_waits_for_idle(make_service) -> None:  # type: ignore[no-untyped-def]
    model = notes_model()
    svc = make_service(model, probe=FlakyProbe(2), max_rounds=1, busy_countdown_s=5)
    ctx = svc.store.add_context(CTX)
    slept: list[float] = []
    outcomes = run_jobs(svc, [ctx.id], sleep=slept.append)
    assert [o.status for o in outcomes] == ["stored"]
    assert slept == [5, 5]


def test_runner_yield_then_resume(make_service) -> None:  # type: ignore[no-untyped-def]
    # idle to start, busy at the first between-rounds check, then idle again
    readings = iter([True, False, True, True, True])

    class Probe:
        def check(self) -> ProbeReading:
            return ProbeReading(idle=next(readings), reason="seq")

    model = ScriptedModel(["r1", "r2", "r3"])
    svc = make_service(model, probe=Probe(), max_rounds=3, busy_countdown_s=1)
    ctx = svc.store.add_context(CTX)
    slept: list[float] = []
    events = []
    outcomes = run_jobs(svc, [ctx.id], sleep=slept.append, on_event=events.append)
    assert [e.outcome.status for e in events] == ["yielded", "stored"]
    assert outcomes[0].rounds == 3 and svc.store.learned_for(ctx.id)[0].text == "r3"
    assert len(model.calls) == 3  # round 1 was not redone after the yield


def test_schedulable_skips_jobs_a_live_worker_holds(make_service) -> None:  # type: ignore[no-untyped-def]
    svc = make_service(notes_model(), lease_s=60, max_rounds=1)
    held = svc.store.add_context("held context")
    dead = svc.store.add_context("context of a dead worker")
    free = svc.store.add_context("free context")
    done = svc.store.add_context("done context")
    svc.learn_sync(done.id)
    cfg = svc.sleep.generator()
    svc.store.claim(svc.store.get(held.id), cfg, worker="w", lease_s=60)
    long_ago = utcnow() - timedelta(seconds=600)
    svc.store.claim(svc.store.get(dead.id), cfg, worker="x", lease_s=60, now=long_ago)
    assert svc.schedulable() == [dead.id, free.id]


def test_extract_final() -> None:
    from nightowl.sleeptime.answer import extract_final

    assert extract_final("Ann has 3, Tom 3.\nSo 6 in all.\nAnswer: 6.") == "6"
    assert extract_final("It opens at 11am on Saturdays.\nMore text") == (
        "It opens at 11am on Saturdays."
    )
    assert extract_final("   ") == ""
