"""Worker tests: a real Redis (from the root ``redis_url`` fixture) and worker processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def broker_url(redis_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh Redis database for one test (flushed before and after).

    Built on the root ``redis_url`` fixture (skips without the test Redis started by
    ``make test``; fails under CI).
    """
    base = redis_url
    import redis

    db = 8 + (abs(hash(request.node.name)) % 7)
    url = base.rsplit("/", 1)[0] + f"/{db}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


def worker_env(tmp_path: Path, broker: str, **sleep: object) -> dict[str, str]:
    """Environment of a worker process: its own SQLite db, the fake model, short timeouts."""
    models = {
        "fake-notes": {
            "backend": "scripted",
            "params": {"function": "tests.workers.fake_model:notes", "delay_s": 0.6},
        }
    }
    env = dict(os.environ)
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "NIGHTOWL_HOME": str(tmp_path / "home"),
            "NIGHTOWL_DATABASE_URL": f"sqlite:///{tmp_path / 'sleep.db'}",
            "NIGHTOWL_BROKER_URL": broker,
            "NIGHTOWL_MODELS": json.dumps(models),
            "NIGHTOWL_SLEEP__MODEL": "fake-notes",
            "NIGHTOWL_SLEEP__MAX_ROUNDS": "4",
            "NIGHTOWL_SLEEP__VISIBILITY_TIMEOUT_S": "6",
            "NIGHTOWL_SLEEP__LEASE_S": "3",
            "NIGHTOWL_SLEEP__BUSY_COUNTDOWN_S": "1",
        }
    )
    env.update({f"NIGHTOWL_SLEEP__{k.upper()}": str(v) for k, v in sleep.items()})
    return env


class Worker:
    """A worker subprocess in its own process group (killed in `stop`)."""

    def __init__(
        self,
        env: dict[str, str],
        log: Path,
        *,
        concurrency: int = 1,
        beat: bool = False,
        queues: str = "sleep",
    ) -> None:
        self.log = log
        self.fh = log.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nightowl.cli.main",
                "worker",
                "--queues",
                queues,
                "--concurrency",
                str(concurrency),
                "--loglevel",
                "INFO",
                "--name",
                f"w{time.monotonic_ns()}@%h",
                *(["--beat"] if beat else []),
            ],
            cwd=REPO,
            env=env,
            stdout=self.fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (main process and pool children)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=20)
        self.fh.close()

    def stop(self) -> None:
        """Warm shutdown, then kill."""
        self.kill(signal.SIGTERM)

    def output(self) -> str:
        """The worker's log so far."""
        return self.log.read_text(errors="replace")


def wait_for(
    pred: Callable[[], bool], timeout: float, what: str, worker: Worker | None = None
) -> None:
    """Poll ``pred`` until true or fail with the worker log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.2)
    tail = worker.output()[-3000:] if worker else ""
    pytest.fail(f"timed out after {timeout}s waiting for {what}\n--- worker log ---\n{tail}")
