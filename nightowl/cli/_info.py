"""`nightowl info`: where data, models and caches live, the dtype, what is reachable."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table


def _mark(ok: bool | None) -> str:
    return {True: "[green]reachable[/]", False: "[red]unreachable[/]", None: "-"}[ok]


def info(
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    probe: Annotated[
        bool,
        typer.Option(
            "--probe/--no-probe",
            help="try the database, broker and model servers (1 s each)",
        ),
    ] = True,
) -> None:
    """Where data, models and caches live, the dtype "auto" picks, what is reachable."""
    from nightowl.app.info import gather_info
    from nightowl.config import load_settings

    rep = gather_info(load_settings(), probe=probe)
    if as_json:
        typer.echo(rep.model_dump_json(indent=2))
        return
    console = Console()
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column("what", style="bold", no_wrap=True)
    t.add_column("value", overflow="fold")
    t.add_row("version", rep.version)
    t.add_row("config", rep.config_file or "(none: no nightowl.toml here or above)")
    new = "" if rep.home.exists else " (not created yet)"
    t.add_row("data home", f"{rep.home.path}{new}\nfrom {rep.home_source}")
    t.add_row("caches", rep.cache_dir.path)
    t.add_row("model cache", rep.model_cache or "(off)")
    t.add_row("dtype auto", f"{rep.dtype}: {rep.dtype_reason}")
    for ep in (rep.database, rep.broker):
        detail = f"\n{ep.detail}" if ep.detail else ""
        t.add_row(ep.name, f"{ep.url}  {_mark(ep.reachable)}{detail}")
    for mi in rep.models:
        detail = f" ({mi.detail})" if mi.detail else ""
        t.add_row(f"model {mi.name}",
                  f"{mi.backend}  {_mark(mi.reachable)}{detail}\n{mi.where}")
    console.print(t)


def schema(
    name: Annotated[
        str, typer.Argument(help="run, collect, calibrate, info, ledger-show, sleep-list, ...")
    ],
) -> None:
    """Print the JSON Schema of a command's --json output (docs/json.md)."""
    import json

    from nightowl.cli._schemas import json_schema

    typer.echo(json.dumps(json_schema(name), indent=2))
