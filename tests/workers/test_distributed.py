"""Distributed runs: `nightowl run --via celery`, real Redis, real `nightowl worker` processes.

- two workers share one run's episodes; the ledger holds one run with every episode once;
- a worker SIGKILLed mid-episode: the redelivered message resumes the episode from its
  checkpoint on another worker, and no finished step is billed twice.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from nightowl.config import load_settings
from nightowl.ledger.tables import Episode, ModelCall
from nightowl.storage import open_db
from tests.workers.conftest import REPO, Worker, wait_for, worker_env

pytestmark = pytest.mark.redis


def _env(tmp_path: Path, broker: str, delay_s: float) -> dict[str, str]:
    env = worker_env(tmp_path, broker)
    models = json.loads(env["NIGHTOWL_MODELS"])
    models["slow-student"] = {
        "backend": "scripted",
        "params": {"function": "tests.agent.fakes:first_choice", "delay_s": delay_s},
    }
    env["NIGHTOWL_MODELS"] = json.dumps(models)
    env["NIGHTOWL_STUDENT_MODEL"] = "slow-student"
    env["NIGHTOWL_EMBEDDER"] = "hashing-fake"
    return env


def _enqueue(env: dict[str, str], *args: str) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "nightowl.cli.main", "run", "--env", "twx", "--game", "coin",
         "--via", "celery", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert r.returncode == 0, r.stderr
    m = re.search(r"run (\w+): (\d+) episodes enqueued", r.stdout)
    assert m, r.stdout
    return m.group(1)


def _episodes(db, run_id: str) -> list[Episode]:  # type: ignore[no-untyped-def]
    with db.sessions() as s:
        return list(s.scalars(select(Episode).where(Episode.run_id == run_id)))


def test_two_workers_share_one_run(tmp_path: Path, broker_url: str) -> None:
    env = _env(tmp_path, broker_url, delay_s=0.2)
    db = open_db(load_settings(database_url=env["NIGHTOWL_DATABASE_URL"]))
    workers = [Worker(env, tmp_path / f"w{i}.log", queues="episodes") for i in range(2)]
    try:
        for w in workers:
            wait_for(lambda w=w: " ready." in w.output(), 60, "the worker to start", w)
        run_id = _enqueue(env, "--ladder", "student", "--tasks", "4", "--max-steps", "6")
        wait_for(
            lambda: sum(e.status != "running" for e in _episodes(db, run_id)) == 4,
            180, "4 episodes to finish", workers[0],
        )
        eps = _episodes(db, run_id)
        assert sorted(Counter(e.task_id for e in eps).values()) == [1, 1, 1, 1]
        assert all(e.n_steps == 6 for e in eps)
        logs = [w.output() for w in workers]
    finally:
        for w in workers:
            w.stop()
    # both workers took episodes (prefetch 1: neither can hoard the queue)
    assert all("nightowl.episodes.run" in log and "succeeded" in log for log in logs), logs


def test_sigkilled_worker_episode_resumes_elsewhere_without_double_billing(
    tmp_path: Path, broker_url: str
) -> None:
    env = _env(tmp_path, broker_url, delay_s=0.5)
    db = open_db(load_settings(database_url=env["NIGHTOWL_DATABASE_URL"]))
    first = Worker(env, tmp_path / "w1.log", queues="episodes")
    second = None
    try:
        run_id = _enqueue(env, "--ladder", "student", "--tasks", "1", "--max-steps", "12")

        def calls() -> list[ModelCall]:
            with db.sessions() as s:
                return list(s.scalars(select(ModelCall).where(ModelCall.run_id == run_id)))

        wait_for(lambda: len(calls()) >= 3, 120, "3 student steps", first)
        first.kill(signal.SIGKILL)
        before = {c.step for c in calls()}
        second = Worker(env, tmp_path / "w2.log", queues="episodes")
        wait_for(lambda: all(e.status != "running" for e in _episodes(db, run_id))
                 and len(_episodes(db, run_id)) == 1, 120, "the episode to finish", second)
        eps = _episodes(db, run_id)
        billed = Counter(c.step for c in calls())
    finally:
        first.kill(signal.SIGKILL)
        if second is not None:
            second.stop()
    assert len(eps) == 1 and eps[0].n_steps == 12, eps
    # every step billed once, except at most the one that was in flight at the kill
    twice = [step for step, n in billed.items() if n > 1]
    assert len(twice) <= 1 and set(twice) <= {max(before)}, billed
    assert sorted(billed) == list(range(12))
