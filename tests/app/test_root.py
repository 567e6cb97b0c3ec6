"""The composition root's lazily built parts: key store, metered models, chat assistant.

Real databases (SQLite, and PostgreSQL when the test services run); the model is a
scripted fake chosen through the registry (backend kind "scripted").
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from nightowl.app import Nightowl
from nightowl.chat import AssistantConfig
from nightowl.config import Settings, load_settings
from nightowl.llm.base import ChatMessage, GenerationRequest

MODELS = {
    "fake-root": {
        "backend": "scripted",
        "params": {"default": "hello"},
        "prices": {"input": 1.0, "cached_input": 0.5, "output": 2.0},
    }
}


def _settings(tmp_path: Path, url: str) -> Settings:
    return load_settings(home=tmp_path / "home", database_url=url, models=MODELS)


def test_keys_and_metered_models(tmp_path: Path, db_url: str) -> None:
    with Nightowl.open(_settings(tmp_path, db_url)) as no:
        assert no.keys is no.keys and no.keys.db is no.db
        plaintext, key = no.keys.create("ci", budget_usd=1.0)
        authed = no.keys.authenticate(plaintext)
        assert authed is not None and authed.id == key.id

        run_id = no.ledger.start_run("root test", kind="try")
        model = no.model("fake-root", run_id=run_id, role="try")
        assert model.backend is no.backend("fake-root")  # the registry's, built once
        request = GenerationRequest(messages=(ChatMessage(role="user", content="hi"),))
        result = asyncio.run(model.generate(request))
        assert result.completions[0].text == "hello"
        calls = no.ledger.model_calls(run_id)
        assert [c.role for c in calls] == ["try"]


def test_assistant_is_built_once_over_the_roots_parts(tmp_path: Path) -> None:
    settings = _settings(tmp_path, f"sqlite:///{tmp_path / 'chat.db'}")
    config = AssistantConfig(student="fake-root", n=1, demos=False)
    with Nightowl.open(settings) as no:
        assistant = no.assistant(config)
        assert no.assistant() is assistant and no.assistant(config) is assistant
        assert assistant.db is no.db and assistant.ledger is no.ledger
        with pytest.raises(ValueError, match="another config"):
            no.assistant(config.model_copy(update={"n": 2}))
        reply = assistant.chat_sync([{"role": "user", "content": "hi"}])
        assert reply.text == "hello" and reply.tier == "student"
        (run,) = no.ledger.list_runs(kind="chat")
        assert run.run_id == assistant.run_id


def test_with_memory_leaves_the_database_to_its_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path, f"sqlite:///{tmp_path / 'mem.db'}")
    with Nightowl.open(settings) as no:
        disposed: list[bool] = []
        monkeypatch.setattr(no.db.engine, "dispose", lambda *a, **k: disposed.append(True))
        with no.with_memory(memory_dir=tmp_path / "other-indexes") as other:
            assert other.db is no.db and other.ledger is no.ledger
        assert disposed == []
    assert disposed == [True]


def test_open_without_migrating(tmp_path: Path) -> None:
    settings = _settings(tmp_path, f"sqlite:///{tmp_path / 'configured.db'}")
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    with Nightowl.open(settings, db_url=url, migrate=False) as no:
        assert no.db.url == url
        assert not no.db.current_revisions()  # as it is: nothing migrated
