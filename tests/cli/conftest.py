"""Fixtures of the CLI tests."""

import pytest

from tests.agent.fakes import fake_student_env


@pytest.fixture
def fake_setup(tmp_path, monkeypatch):
    """A scripted student (first choice), a hashing embedder and a fresh SQLite database."""
    from nightowl.config import get_settings

    url = fake_student_env(monkeypatch, tmp_path, db="j.db")
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()
