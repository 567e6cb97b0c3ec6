"""Per-thread sleep-time scheduling: priority order, queue mode, idempotent rethinks.

The models are scripted fakes (`FunctionModel`: control logic only); the store is the
real SQL one (SQLite and PostgreSQL through the ``db`` fixture).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from nightowl.chat._priority import rank_threads, thread_predictability
from nightowl.chat.sleep import ThreadSleeper
from nightowl.chat.threads import ThreadRecord, ThreadStore
from nightowl.config import Prices
from nightowl.llm.base import ChatMessage, GenerationRequest
from nightowl.llm.scripted import FunctionModel


def _rec(tid: str, minutes_ago: int) -> ThreadRecord:
    return ThreadRecord(
        id=tid, tenant="t", external_id=tid, revision=4, budget_usd=None, spent_usd=0.0,
        last_active_at=datetime.now(UTC) - timedelta(minutes=minutes_ago),
    )


def test_rank_is_expected_queries_times_predictability() -> None:
    threads = [_rec("a", 9), _rec("b", 5), _rec("c", 1), _rec("d", 3)]
    turns = {"a": 1, "b": 5, "c": 2, "d": 2}
    preds: dict[str, float | None] = {"a": 0.9, "b": 0.1, "c": 0.4, "d": None}
    ranked = rank_threads(threads, turns, preds)
    # a: 2*0.9=1.8; b: 6*0.1=0.6; c: 3*0.4=1.2; d unmeasured -> geometric mean of the others
    prior = math.exp((math.log(0.9) + math.log(0.1) + math.log(0.4)) / 3)
    assert [w.thread.id for w in ranked] == ["a", "c", "d", "b"]
    assert ranked[2].predictability == pytest.approx(prior)
    assert [w.priority for w in ranked] == sorted((w.priority for w in ranked), reverse=True)
    # with nothing measured, priority is the number of expected queries; ties: longest idle
    ranked = rank_threads(threads, turns, {})
    assert [w.thread.id for w in ranked] == ["b", "d", "c", "a"]


def _thread(store: ThreadStore, name: str, questions: list[str]) -> str:
    rec = store.open("t", name)
    for q in questions:
        store.sync(rec.id, [ChatMessage(role="user", content=q)])
        store.append(rec.id, ChatMessage(role="assistant", content="ok"))
    return rec.id


async def test_pass_enqueues_by_priority_once_per_revision(db) -> None:  # type: ignore[no-untyped-def]
    store = ThreadStore(db)
    # "predictable" user turns score -0.1 per word, the others -3 (test fake scores)
    few_easy = _thread(store, "few-easy", ["x is 4", "predictable y"])
    many_hard = _thread(store, "many-hard", ["q1", "hard q2", "hard q3", "hard q4"])
    few_hard = _thread(store, "few-hard", ["q1", "hard q2"])

    def score(prompt: str, cont: str) -> float:
        return (-0.1 if "predictable" in cont else -3.0) * len(cont.split())

    scorer = FunctionModel(lambda r: "unused", scores=score)
    sent: list[tuple[str, int]] = []
    sleeper = ThreadSleeper(
        store, FunctionModel(lambda r: "unused"), Prices(),
        queue=lambda tid, rev: sent.append((tid, rev)), scorer=scorer,
    )
    # busy (gate closed): neither measured nor sent
    assert await sleeper.pass_once(idle_s=0.0, gate=lambda: False) == []
    assert scorer.score_calls == [] and sent == []
    ranked = await sleeper.ranked(store.idle_threads(0.0))
    # few-easy: 3 x e^-0.1 = 2.71; many-hard: 5 x e^-3 = 0.25; few-hard: 3 x e^-3 = 0.15
    assert [w.thread.id for w in ranked] == [few_easy, many_hard, few_hard]
    assert ranked[0].predictability == pytest.approx(math.exp(-0.1))
    done = await sleeper.pass_once(idle_s=0.0)
    assert done == [few_easy, many_hard, few_hard]
    assert sent == [(few_easy, 4), (many_hard, 8), (few_hard, 4)]
    calls = len(scorer.score_calls)
    # same revisions: nothing re-sent, predictability not re-measured
    assert await sleeper.pass_once(idle_s=0.0) == []
    assert len(scorer.score_calls) == calls
    # a new turn is a new revision: sent again
    store.sync(few_hard, [ChatMessage(role="user", content="q3")])
    store.append(few_hard, ChatMessage(role="assistant", content="ok"))
    assert await sleeper.pass_once(idle_s=0.0) == [few_hard]
    assert sent[-1] == (few_hard, 6)


async def test_predictability_none_without_scoring_backend() -> None:
    class NoScores(FunctionModel):
        async def score_continuations(self, prompt, continuations):  # type: ignore[no-untyped-def]
            raise NotImplementedError

    msgs = [ChatMessage(role="user", content="a"), ChatMessage(role="assistant", content="b"),
            ChatMessage(role="user", content="c")]
    assert await thread_predictability(msgs, NoScores(lambda r: "")) is None
    assert await thread_predictability(msgs[:1], FunctionModel(lambda r: "")) is None
    p = await thread_predictability(msgs, FunctionModel(lambda r: "", token_logprob=-0.5))
    assert p == pytest.approx(math.exp(-0.5))


async def test_rethink_is_idempotent_per_revision(db) -> None:  # type: ignore[no-untyped-def]
    store = ThreadStore(db)
    tid = _thread(store, "t1", ["Tom has 3 apples."])
    calls: list[GenerationRequest] = []

    def notes(r: GenerationRequest) -> str:
        calls.append(r)
        return "NOTES: Tom has 3 apples."

    sleeper = ThreadSleeper(store, FunctionModel(notes), Prices())
    first = await sleeper.rethink(tid)
    assert (first.status, first.revision) == ("rethought", 2)
    n = len(calls)
    again = await sleeper.rethink(tid)
    assert (again.status, again.revision) == ("fresh", 2)
    assert len(calls) == n  # a fresh thread costs no model call
    # a job that finished thinking after another one saved the same revision stores nothing
    assert store.save_context(tid, 2, "LATE NOTES") is False
    assert store.latest_context(tid).text == "NOTES: Tom has 3 apples."  # type: ignore[union-attr]
