"""At 80 columns nothing is cut: every command's --help shows each option name whole,
and the result tables (run summary, ledger show/runs) keep every number whole."""

import click
import pytest
from rich.console import Console
from typer.main import get_command
from typer.testing import CliRunner

from nightowl.app.runs import RunSummary
from nightowl.cli._tables import summary_table
from nightowl.cli.main import app
from nightowl.config import Prices
from nightowl.ledger import Ledger
from nightowl.llm.base import Usage

runner = CliRunner()
ENV80 = {"COLUMNS": "80", "TERMINAL_WIDTH": "80"}


def _commands(cmd: click.Command, path: list[str]):  # type: ignore[no-untyped-def]
    yield path, cmd
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from _commands(sub, [*path, name])


ALL = list(_commands(get_command(app), []))


@pytest.mark.parametrize("path,cmd", ALL, ids=[" ".join(p) or "nightowl" for p, _ in ALL])
def test_help_whole_at_80_columns(path, cmd):
    res = runner.invoke(app, [*path, "--help"], env=ENV80)
    assert res.exit_code == 0, res.output
    assert "…" not in res.output
    assert max(len(line) for line in res.output.splitlines()) <= 80
    for param in cmd.params:
        for name in [*param.opts, *param.secondary_opts]:
            if name.startswith("-"):
                assert name in res.output, name
        if isinstance(param, click.Option) and param.is_flag and not param.secondary_opts:
            assert "<bool>" not in res.output  # flags read as flags


def _summary(name: str) -> RunSummary:
    return RunSummary(
        name=name, run_id="0123456789abcdef0123456789abcdef", ladder=name, episodes=12,
        successes=11, success_rate=11 / 12, total_cost=0.01234, cost_per_episode=0.0012345,
        cost_of_pass=0.00134678, teacher_share=0.25, teacher_call_share=0.2,
        student_samples_per_step=3.2, steps_per_episode=7.5, wall_s=123.4,
        overhead_ms_per_step=1.0, reasons={}, config={},
    )


@pytest.mark.parametrize("n", [1, 3, 5])
def test_run_summary_whole_at_80(n):
    names = ["teacher", "student", "student+demos", "cascade", "margin"][:n]
    con = Console(width=80, record=True)
    con.print(summary_table([_summary(x) for x in names], "run 0123456789abcdef"))
    text = con.export_text()
    assert "…" not in text
    assert text.count("$0.00123") == n and text.count("$0.00135") == n  # cost, cost-of-pass
    assert text.count("11/12") == n and text.count("(92%)") == n


def test_run_summary_stays_a_table_when_wide():
    con = Console(width=200, record=True)
    con.print(summary_table([_summary("cascade")], "run x"))
    header = next(line for line in con.export_text().splitlines() if "configuration" in line)
    assert "cost-of-pass" in header  # one row per configuration, columns across


def _seed(db) -> str:  # type: ignore[no-untyped-def]
    ledger = Ledger(db)
    run = ledger.start_run("a-rather-long-run-name-for-the-table", "eval", {"x": 1})
    for i, ok in enumerate([True, False]):
        eid = ledger.start_episode(run, f"twx/cookingworld/test/{i}", "twx", "test")
        for role in ("student", "teacher", "teacher-oracle"):
            ledger.record_model_call(
                run_id=run, episode_id=eid, step=0, role=role, model=role,
                usage=Usage(prompt_tokens=123456, cached_prompt_tokens=10000,
                            completion_tokens=5432),
                latency_s=12.25, prices=Prices(input=1.0, cached_input=0.5, output=4.0),
            )
        ledger.finish_episode(eid, success=ok, score=float(ok), n_steps=17, reason="")
    return run


def test_ledger_tables_whole_at_80(sqlite_db):
    run = _seed(sqlite_db)
    show = runner.invoke(app, ["ledger", "show", run, "--db", sqlite_db.url, "--episodes"],
                         env=ENV80)
    assert show.exit_code == 0, show.output
    assert "…" not in show.output
    assert "twx/cookingworld/test/1" in show.output and "246,912" in show.output
    runs = runner.invoke(app, ["ledger", "runs", "--db", sqlite_db.url], env=ENV80)
    assert runs.exit_code == 0 and "…" not in runs.output
    assert run in runs.output  # the whole run id, copyable
