"""`nightowl sleep ...` and `nightowl worker` through the real CLI (scripted model by config)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nightowl.cli.main import app
from nightowl.config import get_settings
from nightowl.errors import UnknownNameError, UserError

REPO = Path(__file__).resolve().parents[2]
MODELS = {
    "fake-notes": {"backend": "scripted", "params": {"function": "tests.workers.fake_model:notes"}}
}


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    env = {
        "NIGHTOWL_HOME": str(tmp_path / "home"),
        "NIGHTOWL_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "NIGHTOWL_MODELS": json.dumps(MODELS),
        "NIGHTOWL_SLEEP__MODEL": "fake-notes",
        "NIGHTOWL_SLEEP__MAX_ROUNDS": "2",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("NIGHTOWL_BROKER_URL", raising=False)
    get_settings.cache_clear()
    yield env
    get_settings.cache_clear()


def test_sleep_add_run_ask_update(cli_env: dict[str, str], tmp_path: Path) -> None:
    runner = CliRunner()
    doc = tmp_path / "chat.txt"
    doc.write_text("User: Tom has 3 apples.\n")
    res = runner.invoke(app, ["sleep", "add", str(doc), "--kind", "conversation"])
    assert res.exit_code == 0, res.output
    ctx_id = res.output.strip()
    assert len(ctx_id) == 32

    res = runner.invoke(app, ["sleep", "run"])
    assert res.exit_code == 0, res.output
    assert "stored" in res.output and "2 rounds" in res.output
    res = runner.invoke(app, ["sleep", "run"])
    assert "nothing to do" in res.output

    res = runner.invoke(app, ["sleep", "ask", ctx_id[:8], "How many apples?", "--budget", "low"])
    assert res.exit_code == 0, res.output
    assert "learned context: yes (with" in res.output and "status fresh" in res.output
    assert "tokens:" in res.output and "cost $" in res.output

    turn = tmp_path / "turn.txt"
    turn.write_text("User: and Bob has 2.")
    res = runner.invoke(app, ["sleep", "update", ctx_id, str(turn), "--append"])
    assert res.exit_code == 0 and "revision 2" in res.output
    res = runner.invoke(app, ["sleep", "ask", ctx_id, "How many apples?", "--mode", "instead"])
    assert "learned context: no; status stale" in res.output

    res = runner.invoke(app, ["sleep", "show", ctx_id])
    assert res.exit_code == 0 and "(stale)" in res.output and "Notes round 2" in res.output
    res = runner.invoke(app, ["sleep", "list"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "stale" in res.output

    res = runner.invoke(app, ["sleep", "ask", "nope", "q"])
    assert isinstance(res.exception, UnknownNameError)
    res = runner.invoke(app, ["sleep", "ask", ctx_id, "q", "--budget", "huge"])
    assert isinstance(res.exception, UserError) and "budget" in str(res.exception)
    res = runner.invoke(app, ["sleep", "add", str(tmp_path / "missing.txt")])
    assert res.exit_code == 2 and "no such file" in res.output  # one line, no traceback


def test_worker_without_broker_is_a_one_line_error(cli_env: dict[str, str]) -> None:
    env = {**os.environ, **cli_env, "PYTHONPATH": str(REPO)}
    env.pop("NIGHTOWL_BROKER_URL", None)
    proc = subprocess.run(
        [sys.executable, "-m", "nightowl.cli.main", "worker"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: no broker configured")
    assert "Traceback" not in proc.stderr
