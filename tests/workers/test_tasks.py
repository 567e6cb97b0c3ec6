"""Task bodies run directly (no broker): index rebuild, payload validation, routing."""

from __future__ import annotations

from pathlib import Path

import pytest

from nightowl.config import get_settings
from nightowl.workers.app import QUEUES, ROUTES, LearnPayload, create_app
from nightowl.workers.guards import MalformedMessage
from nightowl.workers.tasks import learn_context, rebuild_index


def test_index_rebuild_task_rebuilds_from_sql(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NIGHTOWL_DATABASE_URL", f"sqlite:///{tmp_path / 'm.db'}")
    monkeypatch.setenv("NIGHTOWL_HOME", str(tmp_path))
    get_settings.cache_clear()
    try:
        out = rebuild_index.run({"embedder": "hashing-fake", "index_dir": str(tmp_path / "ix")})
    finally:
        get_settings.cache_clear()
    assert set(out["rebuilt"]) >= {"goal"} and all(v == 0 for v in out["rebuilt"].values())


def test_payloads_are_validated() -> None:
    with pytest.raises(MalformedMessage):  # rejected without requeue, never retried
        learn_context.run({"config": {"max_rounds": 0}})
    job = LearnPayload.model_validate({"context_id": "abc", "config": {"model": "m"}})
    assert job.config is not None and job.config.model == "m" and job.deferrals == 0


def test_reliability_settings_and_routes() -> None:
    from nightowl.config import load_settings

    app = create_app(
        load_settings(broker_url="redis://127.0.0.1:1/0", sleep={"visibility_timeout_s": 77})
    )
    conf = app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options["visibility_timeout"] == 77
    # expired unacked messages are swept every 10 s, not kombu's default ~100 s
    assert conf.broker_transport_options["unacked_restore_interval"] == 10
    assert conf.broker_transport_options["unacked_restore_throttle"] == 1
    assert conf.result_backend == "redis://127.0.0.1:1/0"
    assert {q.name for q in conf.task_queues} == set(QUEUES)
    assert conf.task_routes == ROUTES
    assert conf.beat_schedule["sleep-scan"]["task"] == "nightowl.sleep.scan"
