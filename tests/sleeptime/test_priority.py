"""Priority: expected queries x predictability (log p(q|c) from a scoring backend)."""

from __future__ import annotations

import asyncio
import math

from nightowl.llm.scripted import ScriptedModel
from nightowl.sleeptime.policy import measure_predictability, needing_refresh
from nightowl.sleeptime.schema import QueryRow


def _queries(store, ctx_id: str, n: int, text: str = "how many?") -> None:  # type: ignore[no-untyped-def]
    for _ in range(n):
        store.record_query(QueryRow(context_id=ctx_id, query=text))


def test_more_queries_first_then_predictability(make_service) -> None:  # type: ignore[no-untyped-def]
    svc = make_service(ScriptedModel(default="x"))
    quiet = svc.store.add_context("a context nobody asks about")
    busy = svc.store.add_context("a context with many questions")
    mid = svc.store.add_context("a context with a few questions")
    _queries(svc.store, busy.id, 5)
    _queries(svc.store, mid.id, 2)
    order = [w.context.id for w in needing_refresh(svc.store, svc.sleep)]
    assert order == [busy.id, mid.id, quiet.id]
    items = needing_refresh(svc.store, svc.sleep)
    assert [w.expected_queries for w in items] == [6, 3, 1]
    # predictable queries outweigh a higher count: 3 * 0.9 > 6 * 0.2
    svc.store.set_predictability(busy.id, 0.2)
    svc.store.set_predictability(mid.id, 0.9)
    order = [w.context.id for w in needing_refresh(svc.store, svc.sleep)]
    assert order[:2] == [mid.id, busy.id]
    # the unmeasured context gets the geometric mean of the measured ones
    prior = [w for w in needing_refresh(svc.store, svc.sleep) if w.context.id == quiet.id][0]
    assert math.isclose(prior.predictability, math.sqrt(0.2 * 0.9))


def test_measure_predictability_uses_scored_log_probs(make_service) -> None:  # type: ignore[no-untyped-def]
    scorer = ScriptedModel(scores=lambda prompt, cont: -2.0 * len(cont.split()))
    svc = make_service(scorer)
    ctx = svc.store.add_context("Tom has 3 apples.")
    assert asyncio.run(measure_predictability(svc.store, ctx, scorer)) is None  # no queries yet
    _queries(svc.store, ctx.id, 2, "how many apples")
    value = asyncio.run(measure_predictability(svc.store, ctx, scorer))
    assert math.isclose(value, math.exp(-2.0))
    prompt, conts = scorer.score_calls[-1]
    assert prompt.startswith("Tom has 3 apples.") and conts == (" how many apples",)
    assert svc.store.get(ctx.id).predictability == value


def test_plan_measures_through_the_ledger(make_service) -> None:  # type: ignore[no-untyped-def]
    scorer = ScriptedModel(scores=lambda prompt, cont: -1.0 * len(cont.split()))
    svc = make_service(scorer)
    ctx = svc.store.add_context("Tom has 3 apples.")
    _queries(svc.store, ctx.id, 1)
    items = svc.plan(measure=True)
    assert math.isclose(items[0].predictability, math.exp(-1.0))
    run = svc.ledger.list_runs(kind="sleep")[0]
    assert [c.role for c in svc.ledger.model_calls(run.run_id)] == ["sleep"]
