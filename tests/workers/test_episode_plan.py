"""A distributed run's episode messages carry the resolved plan: workers resolve nothing.

The Celery task body (`nightowl.episodes.run`) runs in this process on the JSON payloads
`start_distributed_run` sent (no broker): the student is resolved once, when the run is
enqueued, however many episodes the workers play; a message from before plans (it
carries the spec) is still played, resolved by its worker.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import TypeAdapter

from nightowl.agent.budget import EpisodeBudget
from nightowl.app import Nightowl, start_distributed_run
from nightowl.app.plan import RunSpec
from nightowl.config import get_settings
from nightowl.envs.registry import select_tasks
from nightowl.workers import tasks
from tests.agent.fakes import fake_student_env


class Queue:
    """An episode queue that keeps the JSON payloads it was sent."""

    def __init__(self) -> None:
        self.sent: list[dict] = []

    def enqueue_episode(self, job) -> str:  # type: ignore[no-untyped-def]
        self.sent.append(json.loads(json.dumps(job.model_dump(mode="json"))))
        return f"m{len(self.sent)}"


@pytest.fixture
def worker_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Nightowl]:
    """The settings a worker process reads (fake student, SQLite), and its root."""
    fake_student_env(monkeypatch, tmp_path)
    get_settings.cache_clear()
    try:
        yield tasks.root()
    finally:
        for _, _, root in tasks._ROOT:
            root.close()
        tasks._ROOT.clear()
        get_settings.cache_clear()


def test_episode_messages_carry_the_plan_and_workers_resolve_nothing(
    worker_root: Nightowl, resolutions: list[tuple]
) -> None:
    queue = Queue()
    ids = select_tasks("twx", "test", 3, game="coin")
    run_id = start_distributed_run(
        worker_root,
        RunSpec(name="cascade", env="twx", split="test", task_ids=ids, ladder="cascade",
                budget=EpisodeBudget(max_steps=4)),
        queue,
    )
    assert resolutions == [(None, None)]  # once, when the run is enqueued
    assert len(queue.sent) == 3 and all("spec" not in p or p["spec"] is None
                                        for p in queue.sent)
    plans = [p["plan"] for p in queue.sent]
    assert {p["student"]["name"] for p in plans} == {"fake"}
    assert {p["rule"] for p in plans} == {"unanimity:3"}
    assert {p["budget"]["max_steps"] for p in plans} == {4}
    outcomes = [tasks.run_episode.run(p) for p in queue.sent]  # the Celery task bodies
    assert [o["status"] for o in outcomes] == ["finished"] * 3
    assert resolutions == [(None, None)]  # the workers built from the plan they were sent
    report = worker_root.ledger.run_report(run_id)
    assert report.n_episodes == 3


def test_a_message_from_before_plans_is_resolved_by_its_worker(
    worker_root: Nightowl, resolutions: list[tuple]
) -> None:
    queue = Queue()
    (task,) = select_tasks("twx", "test", 1, game="coin")
    run_id = start_distributed_run(
        worker_root,
        RunSpec(name="teacher", env="twx", split="test", task_ids=[task], ladder="teacher",
                budget=EpisodeBudget(max_steps=3)),
        queue,
    )
    (payload,) = queue.sent
    old = RunSpec(name="teacher", env="twx", split="test", task_ids=[task], ladder="teacher",
                  budget=EpisodeBudget(max_steps=3), concurrency=1, run_id=run_id)
    legacy = {"run_id": run_id, "gen": payload["gen"],
              "spec": TypeAdapter(RunSpec).dump_python(old, mode="json")}
    out = tasks.run_episode.run(legacy)
    assert out["status"] == "finished" and out["steps"] <= 3
    assert len(resolutions) == 2  # the enqueue, and the old message's worker
