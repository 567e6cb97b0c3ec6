"""One data home: NIGHTOWL_HOME, else the project's nightowl.toml found walking up, else
the per-user data folder; `nightowl info` reports it without creating anything."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nightowl.config import find_config, load_settings


@pytest.fixture
def no_home(monkeypatch, tmp_path):
    """No NIGHTOWL_HOME/CONFIG; the per-user folder points into tmp_path (XDG)."""
    monkeypatch.delenv("NIGHTOWL_HOME", raising=False)
    monkeypatch.delenv("NIGHTOWL_CONFIG", raising=False)
    monkeypatch.delenv("NIGHTOWL_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    return tmp_path


def test_per_user_default_without_project(no_home, monkeypatch):
    work = no_home / "anywhere"
    work.mkdir()
    monkeypatch.chdir(work)
    s = load_settings()
    assert s.home == no_home / "xdg" / "nightowl"
    assert s.resolved_cache_dir == s.home / "cache"
    assert s.resolved_database_url == f"sqlite:///{s.home / 'nightowl.db'}"


def test_project_toml_found_from_a_subfolder(no_home, monkeypatch):
    project = no_home / "proj"
    deep = project / "src" / "deep"
    deep.mkdir(parents=True)
    (project / "nightowl.toml").write_text("oracle_output_tokens = 7\n")
    monkeypatch.chdir(deep)
    assert find_config() == project / "nightowl.toml"
    s = load_settings()
    assert s.home == project / ".nightowl"
    assert s.oracle_output_tokens == 7


def test_project_home_key_is_relative_to_the_toml(no_home, monkeypatch):
    project = no_home / "proj"
    (project / "sub").mkdir(parents=True)
    (project / "nightowl.toml").write_text('home = "data"\ncache_dir = "/tmp/x-cache"\n')
    monkeypatch.chdir(project / "sub")
    s = load_settings()
    assert s.home == project / "data"
    assert s.resolved_cache_dir == Path("/tmp/x-cache")


def test_env_home_beats_project(no_home, monkeypatch):
    (no_home / "nightowl.toml").write_text('home = "data"\n')
    monkeypatch.chdir(no_home)
    monkeypatch.setenv("NIGHTOWL_HOME", "rel-home")
    assert load_settings().home == no_home / "rel-home"


def test_test_session_home_is_not_the_users():
    # conftest points NIGHTOWL_HOME at a temporary folder for the whole session.
    s = load_settings()
    assert s.home != Path.home() / ".local" / "share" / "nightowl"
    assert "nightowl-test-home-" in str(s.home)


def test_info_json_reports_home_and_creates_nothing(no_home, monkeypatch):
    from nightowl.cli.main import app

    project = no_home / "proj"
    (project / "a").mkdir(parents=True)
    (project / "nightowl.toml").write_text("")
    monkeypatch.chdir(project / "a")
    res = CliRunner().invoke(app, ["info", "--json", "--no-probe"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["home"] == {"path": str(project / ".nightowl"), "exists": False}
    assert data["home_source"] == "nightowl.toml"
    assert data["config_file"] == str(project / "nightowl.toml")
    assert data["dtype"] in ("float32", "bfloat16") and data["dtype_reason"]
    assert data["database"]["url"].endswith("/proj/.nightowl/nightowl.db")
    assert {m["name"] for m in data["models"]} >= {"smollm2"}
    assert not (project / ".nightowl").exists()


def test_info_probes_an_existing_database(no_home, monkeypatch):
    from nightowl.cli.main import app

    monkeypatch.chdir(no_home)
    monkeypatch.setenv("NIGHTOWL_HOME", str(no_home / "h"))
    load_settings()  # nothing created yet
    res = CliRunner().invoke(app, ["info", "--json"])
    data = json.loads(res.output)
    assert data["database"]["reachable"] is None  # no file yet: not created
    from nightowl.storage import open_db

    open_db(load_settings())
    res = CliRunner().invoke(app, ["info", "--json"])
    assert json.loads(res.output)["database"]["reachable"] is True
    assert json.loads(res.output)["home_source"] == "NIGHTOWL_HOME"
