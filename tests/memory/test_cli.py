"""`nightowl memory ...` end to end on a SQLite file."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from nightowl.cli.main import app
from nightowl.ledger import Ledger
from nightowl.memory import DemoMemory, HashingEmbedder
from nightowl.storage import open_db

from .conftest import COIN, COOKING, steps_of


@pytest.fixture
def cli_db(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    db = open_db(url=url)
    led = Ledger(db)
    run = led.start_run("collect", "collect", {})
    mem = DemoMemory(db, HashingEmbedder())
    for task_id, (goal, pairs) in {"cook-1": COOKING, "coin-1": COIN}.items():
        mem.add_episode(led.start_episode(run, task_id, "tw", "train"), goal, steps_of(pairs))
    mem.close()
    return url, run


def _run(*args: str):
    return CliRunner().invoke(app, ["memory", *args, "--embedder", "hashing-fake"])


def test_stats_search_rebuild_delete(cli_db):
    url, run = cli_db
    r = _run("stats", "--db", url, "--json")
    assert r.exit_code == 0, r.output
    st = json.loads(r.output)
    assert st["demos"] == 2 and st["indexes"]["obs"]["rows"] == len(COOKING[1]) + len(COIN[1])
    r = _run("search", COOKING[0], "--obs", "You open the fridge", "--db", url, "-k", "1")
    assert r.exit_code == 0 and "cook-1" in r.output and "fridge" in r.output
    r = _run("search", COOKING[0], "--obs", "You open the fridge", "--db", url, "--json")
    wins = json.loads(r.output)
    assert "take yellow potato from fridge" in [s["action"] for s in wins[0]["steps"]]
    r = _run("search", COIN[0], "--db", url, "--json")
    assert json.loads(r.output)[0]["task_id"] == "coin-1"
    r = _run("rebuild", "--db", url)
    assert r.exit_code == 0 and "obs=10" in r.output
    r = _run("delete-run", run, "--db", url)
    assert r.exit_code == 0 and "deleted 2" in r.output
    r = _run("search", COIN[0], "--db", url)
    assert "no demos" in r.output


def test_delete_unknown_run_is_a_user_error(cli_db):
    url, _ = cli_db
    r = _run("delete-run", "ffffffffff", "--db", url)
    assert r.exit_code != 0
