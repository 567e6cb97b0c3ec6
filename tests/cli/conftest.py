"""Fixtures of the CLI tests."""

import json

import pytest


@pytest.fixture
def fake_setup(tmp_path, monkeypatch):
    """A scripted student (first choice), a hashing embedder and a fresh SQLite database."""
    from nightowl.config import get_settings

    models = {"fake": {"backend": "scripted",
                       "params": {"function": "tests.agent.fakes:first_choice"}}}
    url = f"sqlite:///{tmp_path / 'j.db'}"
    for k, v in {"NIGHTOWL_HOME": str(tmp_path / "home"), "NIGHTOWL_DATABASE_URL": url,
                 "NIGHTOWL_MODELS": json.dumps(models), "NIGHTOWL_STUDENT_MODEL": "fake",
                 "NIGHTOWL_EMBEDDER": "hashing-fake"}.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()
