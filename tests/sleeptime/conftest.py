"""Sleep-time test fixtures: a migrated database and a service on a scripted model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from nightowl.config import load_settings
from nightowl.llm.base import ModelBackend
from nightowl.sleeptime.idle import AlwaysIdle, IdleProbe
from nightowl.sleeptime.service import SleepService
from nightowl.storage import open_db

ServiceFactory = Callable[..., SleepService]


@pytest.fixture
def make_service(tmp_path: Path, db_url: str) -> ServiceFactory:
    """Build a `SleepService` on a fresh database (SQLite, and PostgreSQL when the test
    services run) with an injected (fake) model."""
    settings = load_settings(home=tmp_path / "home", database_url=db_url)
    db = open_db(settings)

    def build(
        model: ModelBackend, *, probe: IdleProbe | None = None, **sleep: object
    ) -> SleepService:
        sleep.setdefault("model", "fake")
        return SleepService(
            load_settings(home=tmp_path / "home", database_url=db_url, sleep=sleep),
            db=db,
            backend_factory=lambda _name: model,
            probe=probe or AlwaysIdle(),
        )

    return build
