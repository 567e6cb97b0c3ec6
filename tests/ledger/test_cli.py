import os
import subprocess
import sys

from typer.testing import CliRunner

from nightowl.cli.main import app, main
from nightowl.config import Prices
from nightowl.ledger import Ledger
from nightowl.llm.base import Usage
from nightowl.storage import head_revisions

runner = CliRunner()


def _seed(db) -> str:  # type: ignore[no-untyped-def]
    ledger = Ledger(db)
    run = ledger.start_run("cli-run", "eval", {"x": 1})
    for i, ok in enumerate([True, False]):
        eid = ledger.start_episode(run, f"tw/g/dev/{i}", "tw", "dev")
        for role in ("student", "teacher"):
            ledger.record_model_call(
                run_id=run, episode_id=eid, step=0, role=role, model=role,
                usage=Usage(prompt_tokens=100, cached_prompt_tokens=10, completion_tokens=5),
                latency_s=0.2, prices=Prices(input=1.0, cached_input=0.5, output=4.0),
            )
        ledger.finish_episode(eid, success=ok, score=float(ok), n_steps=1, reason="")
    return run


def _run_main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(sys, "argv", ["nightowl", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_ledger_show_renders_tables(db):
    run = _seed(db)
    result = runner.invoke(
        app, ["ledger", "show", run[:8], "--db", db.url, "--episodes"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    out = result.output
    for needle in ("per role", "student", "teacher", "cost-of-pass", "success rate", "50.0%",
                   "teacher call share", "tw/g/dev/1", "episodes"):
        assert needle in out, needle
    as_json = runner.invoke(app, ["ledger", "show", run, "--db", db.url, "--json"])
    assert as_json.exit_code == 0 and '"teacher_call_share": 0.5' in as_json.output


def test_ledger_show_unknown_run_exits_2(sqlite_db, monkeypatch, capsys):
    code, out, err = _run_main(monkeypatch, capsys, "ledger", "show", "deadbeef",
                               "--db", sqlite_db.url)
    assert code == 2
    assert err.strip() == "error: unknown run 'deadbeef'"


def test_ledger_runs_lists_recent(sqlite_db):
    run = _seed(sqlite_db)
    result = runner.invoke(app, ["ledger", "runs", "--db", sqlite_db.url], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert run in result.output and "cli-run" in result.output
    js = runner.invoke(app, ["ledger", "runs", "--db", sqlite_db.url, "--json"])
    assert f'"run_id": "{run}"' in js.output


def test_db_current_and_upgrade(tmp_path, monkeypatch, capsys):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    heads = ", ".join(head_revisions())
    code, out, _ = _run_main(monkeypatch, capsys, "db", "current", "--db", url)
    assert code == 0 and "(empty)" in out and "behind" in out
    code, out, _ = _run_main(monkeypatch, capsys, "db", "upgrade", "--db", url)
    assert code == 0 and out.strip().endswith(heads)
    code, out, _ = _run_main(monkeypatch, capsys, "db", "current", "--db", url)
    assert code == 0 and "up to date" in out


def test_database_url_from_environment(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NIGHTOWL_DATABASE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    code, out, _ = _run_main(monkeypatch, capsys, "ledger", "runs")
    assert code == 0 and "no runs recorded yet" in out
    assert (tmp_path / "env.db").exists()


def test_unreachable_database_is_one_line_exit_2(tmp_path):
    """A real process: one line on stderr, exit code 2, no traceback, password hidden."""
    url = "postgresql+psycopg://u:pw@127.0.0.1:1/x?connect_timeout=2"
    proc = subprocess.run(
        [sys.executable, "-m", "nightowl.cli.main", "ledger", "runs", "--db", url],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot connect to database")
    assert "Traceback" not in proc.stderr and "pw@" not in proc.stderr


def test_malformed_url_is_one_line_exit_2(monkeypatch, capsys):
    code, _, err = _run_main(monkeypatch, capsys, "ledger", "show", "abcd", "--db", "nonsense")
    assert code == 2
    assert err.startswith("error: malformed database URL") and err.count("\n") == 1


def test_malformed_config_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    (tmp_path / "nightowl.toml").write_text("database_url = [unclosed\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NIGHTOWL_DATABASE_URL", raising=False)
    monkeypatch.delenv("NIGHTOWL_CONFIG", raising=False)
    code, _, err = _run_main(monkeypatch, capsys, "ledger", "runs")
    assert code == 2
    assert err.startswith("error: bad configuration") and err.count("\n") == 1


def test_break_even_command(sqlite_db):
    ledger = Ledger(sqlite_db)
    runs = []
    for name, tokens in (("collect", 100), ("teacher", 50), ("ours", 10)):
        run = ledger.start_run(name, "eval")
        eid = ledger.start_episode(run, "t/1")
        ledger.record_model_call(run_id=run, episode_id=eid, role="teacher", model="m",
                                 usage=Usage(prompt_tokens=tokens), latency_s=0,
                                 prices=Prices(input=1_000_000))
        runs.append(run)
    result = runner.invoke(app, ["ledger", "break-even", *runs, "--db", sqlite_db.url])
    assert result.exit_code == 0, result.output
    assert "break-even episodes" in result.output and "2.5" in result.output
    flipped = runner.invoke(
        app, ["ledger", "break-even", runs[0], runs[2], runs[1], "--db", sqlite_db.url, "--json"]
    )
    assert '"episodes": Infinity' in flipped.output
