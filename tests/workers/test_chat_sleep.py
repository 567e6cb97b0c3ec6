"""Chat thread sleep-time as Celery jobs: real Redis, a real `nightowl worker` process.

- the assistant's sleep pass (queue mode) sends an idle thread's rethink to the
  ``sleep`` queue once per revision; the worker stores exactly one c' for it;
- the same job delivered twice more (a duplicate and a redelivery) stores nothing new;
- a worker SIGKILLed mid-rethink leaves no c'; the redelivered message completes it.

The thinking model is the scripted note-writer (`tests.workers.fake_model:notes`).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from nightowl.chat.sleep import ThreadSleeper
from nightowl.chat.tables import ThreadContextRow
from nightowl.chat.threads import ThreadStore
from nightowl.config import Prices, load_settings
from nightowl.llm.base import ChatMessage
from nightowl.llm.scripted import FunctionModel
from nightowl.storage import open_db
from nightowl.workers.app import CeleryQueue, create_app
from tests.workers.conftest import Worker, wait_for, worker_env

pytestmark = pytest.mark.redis


def _contexts(store: ThreadStore, thread_id: str) -> list[int]:
    return store.db.read(
        lambda s: list(
            s.scalars(
                select(ThreadContextRow.revision).where(ThreadContextRow.thread_id == thread_id)
            )
        )
    )


def _setup(tmp_path: Path, broker: str) -> tuple[dict[str, str], ThreadStore, str, CeleryQueue]:
    env = worker_env(tmp_path, broker)
    store = ThreadStore(open_db(load_settings(database_url=env["NIGHTOWL_DATABASE_URL"])))
    rec = store.open("tenant", "thread-1")
    store.sync(rec.id, [ChatMessage(role="user", content="Tom has 3 apples and buys 2.")])
    store.append(rec.id, ChatMessage(role="assistant", content="Noted."))
    sleep = {"visibility_timeout_s": int(env["NIGHTOWL_SLEEP__VISIBILITY_TIMEOUT_S"])}
    queue = CeleryQueue(create_app(load_settings(broker_url=broker, sleep=sleep)))
    return env, store, rec.id, queue


def test_enqueued_rethink_stores_one_context_per_revision(tmp_path: Path, broker_url: str) -> None:
    env, store, tid, queue = _setup(tmp_path, broker_url)
    sent: list[str] = []

    def enqueue(thread_id: str, revision: int) -> None:
        sent.append(queue.enqueue_thread_rethink(thread_id, revision, model="fake-notes"))

    # the server side: a sleep pass in queue mode (it never calls its own model)
    idle = FunctionModel(lambda r: pytest.fail("queue mode must not think in-process"))
    sleeper = ThreadSleeper(store, idle, Prices(), queue=enqueue)
    worker = Worker(env, tmp_path / "w.log")
    try:
        wait_for(lambda: " ready." in worker.output(), 60, "the worker to start", worker)
        assert asyncio.run(sleeper.pass_once(idle_s=0.0)) == [tid]
        assert asyncio.run(sleeper.pass_once(idle_s=0.0)) == []  # once per revision
        first = queue.app.AsyncResult(sent[0]).get(timeout=90)
        assert first["status"] == "rethought" and first["revision"] == 2
        assert _contexts(store, tid) == [2]
        assert "Notes round 1" in store.latest_context(tid).text  # type: ignore[union-attr]
        # the same job twice more: both are no-ops
        again = [queue.enqueue_thread_rethink(tid, 2, model="fake-notes") for _ in range(2)]
        outcomes = [queue.app.AsyncResult(t).get(timeout=90) for t in again]
        assert [o["status"] for o in outcomes] == ["fresh", "fresh"]
        assert _contexts(store, tid) == [2]
    finally:
        worker.stop()
    assert "rethink_thread[" in worker.output()


def test_killed_worker_leaves_no_context_and_redelivery_completes(
    tmp_path: Path, broker_url: str
) -> None:
    env, store, tid, queue = _setup(tmp_path, broker_url)
    # a slow note-writer (5 s a call) so the kill lands mid-rethink
    models = json.loads(env["NIGHTOWL_MODELS"])
    models["slow-notes"] = {**models["fake-notes"]}
    models["slow-notes"]["params"] = {**models["fake-notes"]["params"], "delay_s": 5.0}
    env["NIGHTOWL_MODELS"] = json.dumps(models)
    first = Worker(env, tmp_path / "w1.log")
    try:
        wait_for(lambda: " ready." in first.output(), 60, "the first worker to start", first)
        queue.enqueue_thread_rethink(tid, 2, model="slow-notes")
        # "rethink_thread[<id>] received" (the bare name is in the start-up banner)
        wait_for(lambda: "rethink_thread[" in first.output(), 60, "the job to start", first)
        time.sleep(1.5)  # inside the 5 s model call
        assert "succeeded" not in first.output()
        first.kill(signal.SIGKILL)
        assert _contexts(store, tid) == []
    finally:
        first.kill(signal.SIGKILL)
    second = Worker(env, tmp_path / "w2.log")
    try:
        # visibility timeout 6 s (worker_env) + the restore sweep: the message comes back
        wait_for(lambda: _contexts(store, tid) == [2], 90, "the redelivered job", second)
    finally:
        second.stop()
    assert _contexts(store, tid) == [2]
