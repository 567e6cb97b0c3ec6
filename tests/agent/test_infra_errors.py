"""Infrastructure errors are not losses: retried, recorded as errors, exit code 1.

The environment failures come from `ScriptedFailingEnv` (a scripted fake for the control
logic, registered as "flaky"); the dead model backend is a real OpenAI-compatible HTTP
client pointed at a closed port on 127.0.0.1. Both go through the real CLI (`main`).
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
import time

import pytest

from nightowl.agent.env_pool import _Failed, _guarded
from nightowl.envs import registry
from tests.agent import failing_env


def _cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    from nightowl.cli.main import main
    from nightowl.config import get_settings

    monkeypatch.setattr(sys, "argv", ["nightowl", *args])
    get_settings.cache_clear()  # the CLI reads the settings once per process
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        get_settings.cache_clear()
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture()
def home(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    for k, v in {"NIGHTOWL_HOME": str(tmp_path / "home"), "NIGHTOWL_DATABASE_URL": url,
                 "NIGHTOWL_EMBEDDER": "hashing-fake"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setitem(registry.ENVIRONMENTS, "flaky",
                        "tests.agent.failing_env:ScriptedFailingEnv")
    monkeypatch.setenv("COLUMNS", "200")
    failing_env.reset_counters()
    return url


def _ledger(url):
    from nightowl.config import load_settings
    from nightowl.ledger import Ledger
    from nightowl.storage import open_db

    return Ledger(open_db(load_settings(database_url=url)))


def test_env_failures_are_retried_then_recorded_as_errors_and_exit_1(home, monkeypatch, capsys):
    code, out, err = _cli(monkeypatch, capsys, "run", "--env", "flaky", "--ladder", "teacher",
                          "--tasks", "7", "--concurrency", "3", "--max-steps", "6")
    # the table was printed, then one line on stderr, exit 1
    assert code == 1, (out, err)
    assert "5/5 (100%)" in out  # the errors are not losses: 5 played, 5 won
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "2 episode(s) ended on an infrastructure error" in lines[0]
    assert "not counted as losses" in lines[0]
    ledger = _ledger(home)
    (run,) = ledger.list_runs()
    eps = {e.task_id.split("/")[1]: e for e in ledger.episode_costs(run.run_id)}
    assert len(ledger.episode_costs(run.run_id)) == 7
    # retried on a fresh instance: the one-off failures won
    for game in ("ok", "reset_once", "step_once"):
        assert eps[game].status == "done" and eps[game].success, game
    # failed twice: errors with their reason, not losses
    assert eps["reset_exit"].status == "error" and not eps["reset_exit"].success
    assert eps["step_raise"].status == "error"
    assert failing_env._calls["reset:flaky/reset_exit/test/0"] == 2  # tried twice
    assert failing_env._calls["step:flaky/step_raise/test/0"] == 2
    rep = ledger.run_report(run.run_id)
    assert rep.errors == 2 and rep.success_rate == 1.0 and rep.n_finished == 7
    assert any(r.startswith("env reset failed: SystemExit: scripted") for r in rep.error_reasons)
    assert any(r.startswith("env step failed: RuntimeError: scripted") for r in rep.error_reasons)
    # cost per episode and cost-of-pass are over the 5 played episodes only
    assert rep.error_cost > 0  # the oracle was billed for the failed step's decision
    assert rep.cost_per_episode == pytest.approx((rep.total_cost - rep.error_cost) / 5)
    assert rep.cost_of_pass == pytest.approx(rep.cost_per_episode)
    # and `nightowl report` shows them
    code, out, _ = _cli(monkeypatch, capsys, "report", run.run_id)
    assert code == 0 and "errors (not losses)" in out and "env reset failed" in out


def test_a_run_without_errors_exits_0(home, monkeypatch, capsys):
    code, out, err = _cli(monkeypatch, capsys, "run", "--env", "flaky", "--ladder", "teacher",
                          "--game", "ok", "--tasks", "1", "--max-steps", "6")
    assert code == 0 and "1/1 (100%)" in out and "error" not in err


def test_an_engine_exception_from_a_worker_thread_is_caught_even_keyboard_interrupt():
    """A worker thread's KeyboardInterrupt is the engine's; in the main thread, the user's."""
    def boom(exc):
        raise exc

    async def in_thread(exc):
        return await asyncio.to_thread(_guarded, boom, exc)

    for exc in (SystemExit("x"), KeyboardInterrupt(), RuntimeError("y")):
        got = asyncio.run(in_thread(exc))
        assert isinstance(got, _Failed) and got.exc is exc
    with pytest.raises(KeyboardInterrupt):
        _guarded(boom, KeyboardInterrupt())
    assert isinstance(_guarded(boom, SystemExit(3)), _Failed)
    assert threading.current_thread() is threading.main_thread()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_dead_model_backend_stops_the_run_and_exits_1(home, monkeypatch, capsys):
    port = _closed_port()  # nothing listens there: connection refused
    url = f"http://127.0.0.1:{port}/v1"
    models = {"dead": {"backend": "openai", "params": {
        "base_url": url, "max_retries": 1, "backoff_s": 0.01, "connect_timeout_s": 2}}}
    monkeypatch.setenv("NIGHTOWL_MODELS", json.dumps(models))
    t0 = time.perf_counter()
    code, out, err = _cli(monkeypatch, capsys, "run", "--env", "flaky", "--game", "ok",
                          "--ladder", "student", "--student", "dead", "--tasks", "3",
                          "--concurrency", "1",
                          "--split", "test", "--max-steps", "3")
    wall = time.perf_counter() - t0
    assert code == 1, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "'dead'" in lines[0] and url in lines[0], lines
    assert "unreachable" in lines[0]
    assert wall < 30
    ledger = _ledger(home)
    (run,) = ledger.list_runs()
    (ep,) = ledger.episode_costs(run.run_id)  # the run stopped after the first episode
    assert ep.status == "error"  # recorded, not a loss
