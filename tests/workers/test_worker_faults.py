"""Fault tests with real Redis and real worker processes (the note-writing model is a fake).

- a worker SIGKILLed mid-job: after a restart the job completes, one c' exists;
- a busy idle probe defers the job (re-queued, not dropped); it runs once idle;
- the same job enqueued several times stores exactly one c'.
"""

from __future__ import annotations

import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from nightowl.config import load_settings
from nightowl.sleeptime.store import ContextStore
from nightowl.storage import open_db
from nightowl.workers.app import create_app, enqueue_learn
from tests.workers.conftest import Worker, wait_for, worker_env

pytestmark = pytest.mark.redis

CONTEXT = "Tom has 3 apples. Ann has twice as many apples as Tom. They share them equally."


def _setup(tmp_path: Path, env: dict[str, str]):  # type: ignore[no-untyped-def]
    settings = load_settings(
        home=Path(env["NIGHTOWL_HOME"]),
        database_url=env["NIGHTOWL_DATABASE_URL"],
        broker_url=env["NIGHTOWL_BROKER_URL"],
        sleep={
            "model": env["NIGHTOWL_SLEEP__MODEL"],
            "max_rounds": int(env["NIGHTOWL_SLEEP__MAX_ROUNDS"]),
            "visibility_timeout_s": int(env["NIGHTOWL_SLEEP__VISIBILITY_TIMEOUT_S"]),
        },
    )
    sleep = settings.sleep
    db = open_db(settings)
    store = ContextStore(db.sessions)
    ctx = store.add_context(CONTEXT)
    app = create_app(settings)
    return store, ctx, app, sleep


def _rows(store: ContextStore, ctx_id: str):  # type: ignore[no-untyped-def]
    return store.learned_for(ctx_id, state=None)


def test_sigkill_mid_job_then_restart_completes_with_one_learned_context(
    tmp_path: Path, broker_url: str
) -> None:
    env = worker_env(tmp_path, broker_url)
    store, ctx, app, sleep = _setup(tmp_path, env)
    first = Worker(env, tmp_path / "w1.log")
    second = None
    try:
        enqueue_learn(ctx.id, sleep.generator(), app=app)
        # Killed after round 1 was saved and while round 2 is being generated.
        wait_for(
            lambda: any(r.state == "running" and r.rounds >= 1 for r in _rows(store, ctx.id)),
            90,
            "the job to be mid-way",
            first,
        )
        first.kill(signal.SIGKILL)
        killed_at = time.monotonic()
        rows = _rows(store, ctx.id)
        assert len(rows) == 1 and rows[0].state == "running" and rows[0].rounds < 4
        second = Worker(env, tmp_path / "w2.log")
        wait_for(
            lambda: any(r.state == "done" for r in _rows(store, ctx.id)),
            120,
            "the redelivered job to finish",
            second,
        )
        recovered_s = time.monotonic() - killed_at
        rows = _rows(store, ctx.id)
        assert len(rows) == 1, rows
        done = rows[0]
        assert done.state == "done" and done.rounds == 4 and done.stop_reason == "rounds"
        assert done.attempts >= 2  # claimed by the killed worker, then taken over
        assert "Notes round 4" in done.text  # resumed from the saved progress
        assert store.count_learned(ctx.id) == 1
        print(f"recovered {recovered_s:.1f}s after SIGKILL")
        # visibility timeout 6 s + a restore sweep every 3 s + worker start-up
        assert recovered_s < 60
    finally:
        first.kill()
        if second is not None:
            second.stop()


class _Metrics(BaseHTTPRequestHandler):
    running = 1

    def do_GET(self) -> None:  # noqa: N802
        body = (
            "# HELP vllm:num_requests_running Number of requests running.\n"
            "# TYPE vllm:num_requests_running gauge\n"
            f'vllm:num_requests_running{{model_name="m"}} {float(_Metrics.running)}\n'
            f'vllm:num_requests_waiting{{model_name="m"}} 0.0\n'
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_busy_probe_defers_job_until_idle_and_duplicates_store_one(
    tmp_path: Path, broker_url: str
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Metrics.running = 1
    url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
    env = worker_env(tmp_path, broker_url, probe="prometheus", probe_url=url, probe_quiet_s=0.5)
    store, ctx, app, sleep = _setup(tmp_path, env)
    worker = Worker(env, tmp_path / "w.log", concurrency=2)
    try:
        for _ in range(3):  # duplicates of the same job
            enqueue_learn(ctx.id, sleep.generator(), app=app)
        wait_for(lambda: worker.output().count("busy") >= 3, 90, "deferrals", worker)
        time.sleep(2)
        assert _rows(store, ctx.id) == []  # nothing ran while serving was busy
        _Metrics.running = 0
        wait_for(
            lambda: any(r.state == "done" for r in _rows(store, ctx.id)), 90, "the job", worker
        )
        time.sleep(3)  # let the duplicates run too
        rows = _rows(store, ctx.id)
        assert len(rows) == 1 and rows[0].state == "done"
        assert store.count_learned(ctx.id) == 1
        assert "exists" in worker.output() or "held" in worker.output()
    finally:
        worker.stop()
        server.shutdown()


def test_beat_scan_finds_missing_and_stale_contexts(tmp_path: Path, broker_url: str) -> None:
    env = worker_env(tmp_path, broker_url, scan_interval_s=1, refresh_after_changes=1, max_rounds=1)
    env["NIGHTOWL_SLEEP__MAX_ROUNDS"] = "1"
    store, ctx, app, sleep = _setup(tmp_path, env)
    worker = Worker(env, tmp_path / "w.log", beat=True)
    try:
        # nothing enqueued by hand: the beat scan finds the context without a c'
        wait_for(lambda: store.count_learned(ctx.id) == 1, 90, "the first c'", worker)
        store.append(ctx.id, "User: and Bob has 2 apples.")
        wait_for(lambda: store.count_learned(ctx.id) == 2, 90, "the refreshed c'", worker)
        time.sleep(3)  # further scans find nothing to do
        versions = [lc.version for lc in store.learned_for(ctx.id)]
        assert versions == [2, 1]
        status, fresh = store.fresh_learned(store.get(ctx.id))
        assert status == "fresh" and fresh is not None and fresh.version == 2
    finally:
        worker.stop()


def test_running_job_yields_when_serving_returns_and_resumes(
    tmp_path: Path, broker_url: str
) -> None:
    from nightowl.ledger import Ledger

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Metrics.running = 0
    url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
    env = worker_env(tmp_path, broker_url, probe="prometheus", probe_url=url, probe_quiet_s=0.2)
    store, ctx, app, sleep = _setup(tmp_path, env)
    worker = Worker(env, tmp_path / "w.log")
    try:
        enqueue_learn(ctx.id, sleep.generator(), app=app)
        wait_for(
            lambda: any(r.state == "running" and r.rounds >= 1 for r in _rows(store, ctx.id)),
            90,
            "the job to start",
            worker,
        )
        _Metrics.running = 1  # serving traffic returns
        wait_for(
            lambda: any(r.state == "paused" for r in _rows(store, ctx.id)), 30, "a yield", worker
        )
        paused = _rows(store, ctx.id)[0]
        assert 1 <= paused.rounds < 4
        time.sleep(2)
        assert _rows(store, ctx.id)[0].state == "paused"  # still deferred while busy
        _Metrics.running = 0
        wait_for(
            lambda: any(r.state == "done" for r in _rows(store, ctx.id)), 60, "the resume", worker
        )
        done = _rows(store, ctx.id)[0]
        assert done.rounds == 4 and "Notes round 4" in done.text
        # resumed, not restarted: exactly one sleep call per round in the ledger
        ledger = Ledger(open_db(url=env["NIGHTOWL_DATABASE_URL"]))
        calls = [c for r in ledger.list_runs(kind="sleep") for c in ledger.model_calls(r.run_id)]
        assert [c.role for c in calls] == ["sleep"] * 4
    finally:
        worker.stop()
        server.shutdown()
