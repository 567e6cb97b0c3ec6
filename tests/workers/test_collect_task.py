"""The demo-collection task body (run directly, no broker): oracle teacher on TextWorld-Express."""

from __future__ import annotations

from pathlib import Path

import pytest

from nightowl.config import get_settings
from nightowl.workers.tasks import collect_demos


@pytest.mark.slow  # starts the TextWorld-Express JVM and loads the tokenizer for billing
def test_collect_task_adds_oracle_demos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NIGHTOWL_DATABASE_URL", f"sqlite:///{tmp_path / 'c.db'}")
    monkeypatch.setenv("NIGHTOWL_HOME", str(tmp_path))
    monkeypatch.setenv("NIGHTOWL_EMBEDDER", "hashing-fake")
    get_settings.cache_clear()
    try:
        out = collect_demos.run(
            {"env": "twx", "tasks": 2, "game": "coin", "max_steps": 30, "concurrency": 1}
        )
    finally:
        get_settings.cache_clear()
    assert out["episodes"] == 2
    assert out["successes"] == out["demos_added"] >= 1
