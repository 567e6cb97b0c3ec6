"""`nightowl ledger ...` (costs of runs) and `nightowl db ...` (migrations)."""

from __future__ import annotations

import json
import math
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from nightowl.cli._fit import fit
from nightowl.cli._options import DbOption, open_root

ledger_app = typer.Typer(
    help="Cost ledger: runs, episodes, model and tool calls.", no_args_is_help=True
)
db_app = typer.Typer(help="The SQL database: migrations.", no_args_is_help=True)


def _usd(x: float) -> str:
    if math.isinf(x):
        return "inf"
    return f"${x:,.6f}" if abs(x) < 1 else f"${x:,.2f}"


@ledger_app.command("show")
def show(
    run_id: Annotated[str, typer.Argument(help="run id (or a unique prefix of at least 4)")],
    db: DbOption = None,
    episodes: Annotated[bool, typer.Option("--episodes", help="also list every episode")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Costs of one run: per role calls/tokens/cost, episodes, success, cost-of-pass."""
    from nightowl.cli._inflight import inflight_table, success_text

    with open_root(db) as no:
        rid = no.ledger.resolve_run_id(run_id)
        report = no.ledger.run_report(rid)
        costs = no.ledger.episode_costs(rid) if episodes else []
    if as_json:
        if episodes:
            from nightowl.cli._schemas import RunReportWithEpisodes

            full = RunReportWithEpisodes(
                report=report.model_dump(mode="json"),
                episodes=[e.model_dump(mode="json") for e in costs],
            )
            typer.echo(full.model_dump_json(indent=2))
        else:
            typer.echo(report.model_dump_json(indent=2))
        return
    console = Console()
    head = Table(title=f"run {report.run_id}", show_header=False)
    head.add_column("metric", style="bold")
    head.add_column("value", justify="right")
    head.add_row("name / kind", f"{report.name or '-'} / {report.kind or '-'}")
    head.add_row("created", report.created_at.strftime("%Y-%m-%d %H:%M:%S UTC"))
    head.add_row("episodes", report.progress)
    head.add_row("successes", str(report.successes))
    head.add_row("success rate", success_text(report, 1))
    head.add_row("total cost", _usd(report.total_cost))
    head.add_row("  model / tools", f"{_usd(report.model_cost)} / {_usd(report.tool_cost)}")
    for model, cost in report.models.items():
        head.add_row(f"    {model}", _usd(cost))
    head.add_row("  outside episodes", _usd(report.overhead_cost))
    head.add_row("cost per episode", _usd(report.cost_per_episode))
    head.add_row("cost-of-pass", _usd(report.cost_of_pass))
    head.add_row("teacher share (teacher-acted steps)", f"{report.teacher_share:.2f}")
    head.add_row(
        "teacher call share",
        f"{report.teacher_call_share:.1%} ({report.teacher_calls}/{report.acting_calls})",
    )
    head.add_row("model calls (failed)", f"{report.model_calls} ({report.failed_model_calls})")
    head.add_row("tool calls", str(report.tool_calls))
    head.add_row("wall time", f"{report.wall_time_s:,.1f} s")
    console.print(fit(head))
    flight = inflight_table(report)
    if flight is not None:
        console.print(flight)

    roles = Table(title="per role")
    cols = ["role", "calls", "failed", "prompt tok", "cached tok", "completion tok", "cost"]
    for col in [*cols, "latency s"]:
        roles.add_column(col, justify="left" if col == "role" else "right")
    for st in report.roles.values():
        roles.add_row(
            st.role,
            str(st.calls),
            str(st.failed_calls),
            f"{st.prompt_tokens:,}",
            f"{st.cached_prompt_tokens:,}",
            f"{st.completion_tokens:,}",
            _usd(st.cost_usd),
            f"{st.latency_s:,.2f}",
        )
    if not report.roles:
        roles.add_row("(no model calls)", "", "", "", "", "", "", "")
    console.print(fit(roles))

    if episodes:
        eps = Table(title="episodes")
        for col in ("task", "split", "status", "success", "steps", "calls", "teacher", "cost"):
            eps.add_column(col, justify="left" if col in ("task", "split", "status") else "right")
        for e in costs:
            eps.add_row(
                e.task_id,
                e.split,
                e.status,
                "-" if e.success is None else ("yes" if e.success else "no"),
                str(e.n_steps),
                str(e.model_calls),
                str(e.teacher_calls),
                _usd(e.cost_usd),
            )
        console.print(fit(eps))


@ledger_app.command("runs")
def runs(
    db: DbOption = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=100_000, help="how many")] = 20,
    kind: Annotated[str | None, typer.Option("--kind", help="only runs of this kind")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON lines")] = False,
) -> None:
    """Recent runs, newest first."""
    with open_root(db) as no:
        rows = no.ledger.list_runs(limit=limit, kind=kind)
    if as_json:
        for r in rows:
            typer.echo(json.dumps(r.model_dump(mode="json")))
        return
    table = Table(title="runs")
    for col in ("id", "name", "kind", "created (UTC)", "episodes", "successes", "cost"):
        numeric = col in ("episodes", "successes", "cost")
        table.add_column(col, justify="right" if numeric else "left")
    for r in rows:
        table.add_row(
            r.run_id,
            r.name,
            r.kind,
            r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            str(r.n_episodes),
            str(r.successes),
            _usd(r.total_cost),
        )
    Console().print(fit(table))
    if not rows:
        typer.echo("no runs recorded yet")


@ledger_app.command("break-even")
def break_even(
    collection_run: Annotated[str, typer.Argument(help="the demo-collection run (its total cost)")],
    teacher_only_run: Annotated[str, typer.Argument(help="a teacher-only run (cost per episode)")],
    our_run: Annotated[str, typer.Argument(help="our run (cost per episode)")],
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Episodes until a one-off demo collection pays for itself.

    n* = collection cost / (teacher-only cost per episode - our cost per episode).
    """
    with open_root(db) as no:
        ids = [no.ledger.resolve_run_id(r) for r in (collection_run, teacher_only_run, our_run)]
        be = no.ledger.break_even(*ids)
    if as_json:
        typer.echo(be.model_dump_json(indent=2))
        return
    table = Table(title="break-even", show_header=False)
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    table.add_row("collection cost", _usd(be.collection_cost))
    table.add_row("teacher-only cost / episode", _usd(be.teacher_only_cost_per_episode))
    table.add_row("our cost / episode", _usd(be.our_cost_per_episode))
    table.add_row("saving / episode", _usd(be.saving_per_episode))
    episodes = "never (not cheaper)" if math.isinf(be.episodes) else f"{be.episodes:,.1f}"
    table.add_row("break-even episodes", episodes)
    Console().print(fit(table))


@db_app.command("upgrade")
def upgrade(db: DbOption = None) -> None:
    """Create or migrate the database to the newest schema (all heads)."""
    from nightowl.storage import redact_url

    with open_root(db) as no:  # opening migrates to heads
        revs = no.db.upgrade()
        url = no.db.url
    typer.echo(f"{redact_url(url)}: at {', '.join(revs) or '(empty)'}")


@db_app.command("current")
def current(db: DbOption = None) -> None:
    """Show the database URL, its migration revisions and the shipped heads."""
    from nightowl.storage import head_revisions, redact_url

    with open_root(db, migrate=False) as no:
        revs = no.db.current_revisions()
        url = no.db.url
    heads = head_revisions()
    state = "up to date" if revs == heads else f"behind (heads: {', '.join(heads)})"
    typer.echo(f"{redact_url(url)}: at {', '.join(revs) or '(empty)'} - {state}")
