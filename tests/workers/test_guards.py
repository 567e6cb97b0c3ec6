"""Worker hardening: malformed messages rejected once, message paths confined to the data
home, soft and hard time limits on every task (the last two with a real Redis worker)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from nightowl.config import get_settings, load_settings
from nightowl.errors import ConfigError
from nightowl.sleeptime.store import ContextStore
from nightowl.storage import open_db
from nightowl.workers.app import create_app
from nightowl.workers.guards import MalformedMessage, confined, plain_name
from nightowl.workers.tasks import learn_context, rebuild_index
from tests.workers.conftest import Worker, wait_for, worker_env


def test_confined_paths(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    assert confined("ix", home, "t") == (home / "ix").resolve()
    assert confined(str(home / "a" / "b"), home, "t") == (home / "a" / "b").resolve()
    (home / "out").symlink_to(tmp_path)
    for bad in ("/etc/nightowl-ix", "../ix", "a/../../ix", str(tmp_path / "ix"), "out/ix", "~"):
        with pytest.raises(MalformedMessage, match="outside the data home"):
            confined(bad, home, "t")
    for bad in ("/models/x", "../x", "./x", "~/x"):
        with pytest.raises(MalformedMessage, match="is a path"):
            plain_name(bad, "t")
    assert plain_name("sentence-transformers/all-MiniLM-L6-v2", "t")


def test_rebuild_index_refuses_a_path_outside_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("NIGHTOWL_DATABASE_URL", f"sqlite:///{tmp_path / 'm.db'}")
    monkeypatch.setenv("NIGHTOWL_HOME", str(home))
    get_settings.cache_clear()
    outside = tmp_path / "elsewhere"
    try:
        with pytest.raises(MalformedMessage, match="outside the data home"):
            rebuild_index.run({"embedder": "hashing-fake", "index_dir": str(outside)})
        with pytest.raises(MalformedMessage, match="is a path"):
            rebuild_index.run({"embedder": str(tmp_path), "index_dir": "ix"})
        with pytest.raises(MalformedMessage, match="index_dir"):
            rebuild_index.run({"index_dir": ["not", "a", "path"]})
        out = rebuild_index.run({"embedder": "hashing-fake", "index_dir": "ix"})
    finally:
        get_settings.cache_clear()
    assert not outside.exists()
    assert (home / "ix").is_dir() and "goal" in out["rebuilt"]


def test_malformed_payloads_are_rejected_not_retried() -> None:
    with pytest.raises(MalformedMessage, match="context_id") as err:
        learn_context.run({"config": {"max_rounds": 0}})
    assert err.value.requeue is False
    with pytest.raises(MalformedMessage, match="payload"):
        learn_context.run("not an object")


def test_time_limits_are_configured_and_ordered() -> None:
    limits = {"task_soft_time_limit_s": 50, "task_time_limit_s": 60}
    app = create_app(load_settings(broker_url="redis://127.0.0.1:1/0", sleep=limits))
    assert app.conf.task_soft_time_limit == 50 and app.conf.task_time_limit == 60
    settings = load_settings(broker_url="redis://127.0.0.1:1/0")
    default = create_app(settings)
    assert 0 < default.conf.task_soft_time_limit < default.conf.task_time_limit
    assert default.conf.task_time_limit < settings.sleep.visibility_timeout_s
    with pytest.raises(ConfigError, match="NIGHTOWL_SLEEP__TASK_SOFT_TIME_LIMIT_S") as err:
        load_settings(sleep={"task_soft_time_limit_s": 60, "task_time_limit_s": 60})
    assert "\n" not in str(err.value)


@pytest.mark.redis
def test_real_worker_rejects_bad_messages_once_and_kills_a_job_at_its_limit(
    tmp_path: Path, broker_url: str
) -> None:
    # One model call takes 3 s: the 1 s soft limit interrupts it, the 2 s hard limit is
    # the backstop; neither message may come back (visibility timeout 6 s).
    env = worker_env(tmp_path, broker_url, task_soft_time_limit_s=1, task_time_limit_s=2)
    env["NIGHTOWL_MODELS"] = env["NIGHTOWL_MODELS"].replace('"delay_s": 0.6', '"delay_s": 3.0')
    settings = load_settings(home=Path(env["NIGHTOWL_HOME"]),
                             database_url=env["NIGHTOWL_DATABASE_URL"], broker_url=broker_url,
                             sleep={"model": "fake-notes", "visibility_timeout_s": 6})
    sleep = settings.sleep
    app = create_app(settings)
    ctx = ContextStore(open_db(settings).sessions).add_context("Tom has 3 apples.")
    outside = tmp_path / "outside-index"
    worker = Worker(env, tmp_path / "w.log", queues="sleep,index")
    try:
        bad_path = app.send_task("nightowl.index.rebuild", args=[{"index_dir": str(outside)}])
        bad_shape = app.send_task("nightowl.sleep.learn", args=[{"config": {"max_rounds": 0}}])
        job = {"context_id": ctx.id, "config": sleep.generator().model_dump()}
        slow = app.send_task("nightowl.sleep.learn", args=[job])
        wait_for(lambda: worker.output().count("rejected: malformed") >= 2, 90,
                 "both bad messages to be rejected", worker)
        wait_for(lambda: "time limit" in worker.output().lower(), 60,
                 "the slow job to hit its time limit", worker)
        started = time.monotonic()
        wait_for(lambda: time.monotonic() - started > 10, 20, "a redelivery window")
        log = worker.output()
        assert worker.proc.poll() is None, log[-2000:]
    finally:
        worker.stop()
    assert log.count("rejected: malformed") == 2, log[-3000:]
    for task in (bad_path, bad_shape, slow):
        assert len(re.findall(rf"Task \S+\[{task.id}\] received", log)) == 1, log[-3000:]
    assert not outside.exists()
