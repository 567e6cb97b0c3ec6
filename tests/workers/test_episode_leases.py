"""The fault tests a user would run: real Redis, real PostgreSQL, real `nightowl worker`s.

Default settings except a short episode lease (``NIGHTOWL_EPISODE_LEASE_S``); in
particular the broker's visibility timeout stays at its default of one hour, so only the
leases can bring a lost episode back in time.

- two workers, one SIGKILLed (main process and pool child) mid-episode: its episode is
  re-queued by the other worker's lease monitor and finishes there from its checkpoint;
  every episode exactly once, no step billed twice except the one in flight at the kill;
- the Redis broker restarts (no persistence: queued messages are lost) mid-run: the
  lost messages are sent again and the run completes, every episode exactly once.

Each worker has its own NIGHTOWL_HOME: nothing is shared but Redis and PostgreSQL.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from nightowl.ledger import LeaseStore
from nightowl.ledger.tables import Episode, ModelCall
from nightowl.storage import open_db
from tests.workers.conftest import REPO, Worker, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

LEASE_S = 5
STEPS = 8


def _env(home: Path, broker: str, db_url: str) -> dict[str, str]:
    """A worker's (or the CLI's) environment: defaults except the lease and a fake student."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NIGHTOWL_")}
    models = {"slow-student": {"backend": "scripted", "params": {
        "function": "tests.agent.fakes:first_choice", "delay_s": 0.4}}}
    env.update({
        "PYTHONPATH": str(REPO),
        "NIGHTOWL_HOME": str(home),
        "NIGHTOWL_DATABASE_URL": db_url,
        "NIGHTOWL_BROKER_URL": broker,
        "NIGHTOWL_MODELS": json.dumps(models),
        "NIGHTOWL_STUDENT_MODEL": "slow-student",
        "NIGHTOWL_EMBEDDER": "hashing-fake",
        "NIGHTOWL_THREADS": "1",
        "NIGHTOWL_EPISODE_LEASE_S": str(LEASE_S),
    })
    return env


def _enqueue(env: dict[str, str], tasks: int) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "nightowl.cli.main", "run", "--env", "twx", "--game", "coin",
         "--via", "celery", "--ladder", "student", "--tasks", str(tasks), "--max-steps",
         str(STEPS)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert r.returncode == 0, r.stderr
    m = re.search(r"run (\w+): (\d+) episodes enqueued", r.stdout)
    assert m, r.stdout
    return m.group(1)


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def _check_exactly_once(db, run_id: str, tasks: int) -> tuple[list[Episode], Counter]:  # type: ignore[no-untyped-def]
    with db.sessions() as s:
        eps = list(s.scalars(select(Episode).where(Episode.run_id == run_id)))
        calls = list(s.scalars(select(ModelCall).where(ModelCall.run_id == run_id)))
    assert len(eps) == tasks, [(e.task_id, e.status) for e in eps]
    assert sorted(Counter(e.task_id for e in eps).values()) == [1] * tasks
    assert all(e.status == "done" and e.n_steps == STEPS for e in eps), eps
    billed = Counter((c.episode_id, c.step) for c in calls)
    return eps, billed


def test_sigkilled_worker_episode_is_requeued_and_finishes_once(
    tmp_path: Path, broker_url: str, pg_schema_url: str
) -> None:
    db = open_db(url=pg_schema_url)
    leases = LeaseStore(db)
    envs = [_env(tmp_path / f"home{i}", broker_url, pg_schema_url) for i in range(3)]
    workers = [Worker(envs[i], tmp_path / f"w{i}.log", queues="episodes") for i in range(2)]
    try:
        for w in workers:
            wait_for(lambda w=w: " ready." in w.output(), 90, "the worker to start", w)
        run_id = _enqueue(envs[2], tasks=2)

        def victim():  # type: ignore[no-untyped-def]
            for r in leases.for_run(run_id):
                if r.state == "running" and r.step >= 2 and r.pid is not None:
                    return r
            return None

        wait_for(lambda: victim() is not None, 90, "an episode at step 2", workers[0])
        row = victim()
        assert row is not None
        [dead] = [w for w in workers if _ppid(row.pid) == w.proc.pid or row.pid == w.proc.pid]
        dead.kill(signal.SIGKILL)  # the whole process group: main process and pool child
        killed_at = time.monotonic()
        survivor = next(w for w in workers if w is not dead)

        def finished() -> bool:
            r = leases.get(run_id, row.task_id)
            return r is not None and r.state == "done"

        wait_for(finished, 60, "the killed worker's episode to finish elsewhere", survivor)
        recovered_s = time.monotonic() - killed_at
        wait_for(lambda: all(r.state == "done" for r in leases.for_run(run_id)), 60,
                 "the run to finish", survivor)
        eps, billed = _check_exactly_once(db, run_id, 2)
        after = leases.get(run_id, row.task_id)
        log = survivor.output()
    finally:
        for w in workers:
            w.kill(signal.SIGKILL)
    assert after is not None and after.requeues == 1 and after.attempt == 2, after
    assert "lease expired" in (after.reason or "") and str(row.pid) in (after.reason or "")
    assert after.pid != row.pid
    # every (episode, step) billed once, except at most the step in flight at the kill
    twice = [k for k, n in billed.items() if n > 1]
    killed_ep = next(e.id for e in eps if e.task_id == row.task_id)
    assert len(twice) <= 1 and all(ep == killed_ep for ep, _ in twice), billed
    assert sorted(step for _, step in billed) == sorted(list(range(STEPS)) * 2)
    assert "re-queued episode" in log
    print(f"recovered {recovered_s:.1f}s after SIGKILL (lease {LEASE_S}s)")
    # lease expiry + one check period + the rest of the episode (at most STEPS x 0.4 s)
    assert recovered_s < 2 * LEASE_S + STEPS * 0.4 + 5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Redis:
    """Our own redis-server (no persistence) that the test can restart on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.port = _free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip("redis-server not installed")
        self.proc = subprocess.Popen(
            [exe, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        import redis

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.port).ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def test_broker_restart_mid_run_loses_messages_and_the_run_still_completes(
    tmp_path: Path, pg_schema_url: str
) -> None:
    redis_server = _Redis(tmp_path)
    redis_server.start()
    broker = f"redis://127.0.0.1:{redis_server.port}/0"
    db = open_db(url=pg_schema_url)
    leases = LeaseStore(db)
    tasks = 4
    envs = [_env(tmp_path / f"home{i}", broker, pg_schema_url) for i in range(2)]
    worker = Worker(envs[0], tmp_path / "w.log", queues="episodes")
    try:
        wait_for(lambda: " ready." in worker.output(), 90, "the worker to start", worker)
        run_id = _enqueue(envs[1], tasks=tasks)
        wait_for(lambda: any(r.state == "running" and r.step >= 1
                             for r in leases.for_run(run_id)), 90, "the first episode", worker)
        redis_server.stop()  # queued messages die with it (no persistence)
        time.sleep(1)
        redis_server.start()
        wait_for(lambda: all(r.state == "done" for r in leases.for_run(run_id)), 90,
                 "the run to finish after the broker restart", worker)
        _, billed = _check_exactly_once(db, run_id, tasks)
        rows = leases.for_run(run_id)
        log = worker.output()
    finally:
        worker.kill(signal.SIGKILL)
        redis_server.stop()
    assert all(n == 1 for n in billed.values()), billed  # no worker died: nothing repeats
    assert any("message lost" in (r.reason or "") for r in rows), rows
    assert "re-sent episode" in log
