"""`nightowl envs ...`: list environments, list their tasks, play a task."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from nightowl.cli._errors import one_line_errors
from nightowl.cli._fit import fit

if TYPE_CHECKING:
    from nightowl.envs.base import Environment, Observation
    from nightowl.envs.service import StepRecord

envs_app = typer.Typer(
    help="Environments: list them with task counts, list tasks, play a task.",
    no_args_is_help=True,
)


def _short(text: str, n: int = 160) -> str:
    one = " ".join(text.split())
    return one if len(one) <= n else one[: n - 1] + "…"


@envs_app.command("list")
def list_envs(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Every environment: games, tasks per split, expert, installed."""
    from nightowl.envs.service import describe_envs

    with one_line_errors():
        rows = describe_envs()
    if as_json:
        typer.echo(json.dumps([asdict(r) for r in rows], indent=2))
        return
    table = Table(title="nightowl environments (tasks per split)")
    for col in ("env", "games", "train", "dev", "test", "expert", "installed"):
        table.add_column(col, justify="left" if col in ("env", "installed") else "right")
    for r in rows:
        installed = "yes" if r.installed else f"no: pip install 'nightowl[{r.extra}]'"
        if r.error:
            installed = f"no: {_short(r.error, 60)}"
        installed = escape(installed)
        counts = [f"{r.counts[s]:,}" if r.counts else "-" for s in ("train", "dev", "test")]
        expert = "yes" if r.has_expert else ("no" if r.installed else "-")
        games = str(len(r.games)) if r.games else "-"
        table.add_row(f"{r.name} ({r.feature})", games, *counts, expert, installed)
    console = Console()
    console.print(fit(table))
    for r in rows:
        if r.games:
            console.print(f"[bold]{r.name}[/]: {escape(', '.join(r.games))}")


@envs_app.command("tasks")
def list_tasks(
    env: Annotated[str, typer.Argument(help="environment name, e.g. twx")],
    split: Annotated[str, typer.Option(help="train, dev or test")] = "test",
    game: Annotated[str | None, typer.Option(help="only this game")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1_000_000, help="at most this many")] = 10,
) -> None:
    """Task ids of one split (deterministic order), with their game parameters."""
    from nightowl.envs.base import SPLITS
    from nightowl.envs.registry import make_env
    from nightowl.errors import UnknownNameError

    with one_line_errors():
        if split not in SPLITS:
            raise UnknownNameError("split", split, list(SPLITS))
        e = make_env(env)
        try:
            every = e.tasks(split)  # type: ignore[arg-type]  # checked above
            specs = [t for t in every if game is None or t.game == game]
            if game is not None and not specs:
                raise UnknownNameError(f"{env} game", game, sorted({t.game for t in every}))
        finally:
            e.close()
    for spec in specs[:limit]:
        typer.echo(f"{spec.task_id}\t{json.dumps(spec.params, sort_keys=True)}")
    if len(specs) > limit:
        typer.echo(f"... {len(specs) - limit:,} more ({len(specs):,} in {split})")


@envs_app.command("play")
def play(
    task_id: Annotated[str, typer.Argument(help="e.g. twx/coin/test/20003")],
    expert: Annotated[bool, typer.Option("--expert", help="let the oracle teacher play")] = False,
    max_steps: Annotated[
        int, typer.Option(min=1, max=10_000, help="stop after this many steps")
    ] = 100,
) -> None:
    """Play one task: with --expert the environment's expert plays; else you type actions."""
    from nightowl.envs.registry import env_for_task

    console = Console()
    with one_line_errors():
        env = env_for_task(task_id, max_steps=max_steps)
        try:
            if expert:
                _play_expert(console, env, task_id, max_steps)
            else:
                _play_interactive(console, env, task_id)
        finally:
            env.close()


def _play_expert(console: Console, env: Environment, task_id: str, max_steps: int) -> None:
    from nightowl.envs.service import play_expert

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("score {task.fields[score]:g}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task(f"resetting {task_id}", total=max_steps, score=0.0)

        def on_reset(obs: Observation) -> None:
            progress.update(bar, description=task_id)
            progress.console.print(f"[bold]goal:[/] {escape(_short(obs.goal, 300))}")
            progress.console.print(f"[dim]{escape(_short(obs.text, 300))}[/]")

        def on_step(rec: StepRecord) -> None:
            res = rec.result
            flag = " [red](invalid)[/]" if res.invalid else ""
            act = f"{rec.index:>3} [cyan]> {escape(rec.action)}[/]{flag}"
            progress.console.print(f"{act}  {escape(_short(res.text))}")
            progress.update(bar, advance=1, score=res.score)

        record = play_expert(
            env, task_id, max_steps=max_steps, on_reset=on_reset, on_step=on_step
        )
    verdict = "[green]won[/]" if record.won else f"[red]not won[/] ({record.stopped})"
    console.print(
        f"{verdict}: score {record.score:g} in {record.steps} steps "
        f"({record.invalid} invalid); reset {record.reset_seconds:.2f}s, "
        f"total {record.seconds:.2f}s"
    )
    if not record.won:
        raise typer.Exit(1)


def _play_interactive(console: Console, env: Environment, task_id: str) -> None:
    obs = env.reset(task_id)
    console.print(f"[bold]goal:[/] {escape(obs.goal)}\n{escape(obs.text)}")
    console.print("[dim]type an action; 'valid' lists valid actions, 'quit' stops[/]")
    valid = obs.valid_actions
    while True:
        action = typer.prompt(">", default="", show_default=False)
        if action.strip() == "quit":
            return
        if action.strip() == "valid":
            console.print(escape(", ".join(valid or ("(not known for this environment)",))))
            continue
        res = env.step(action)
        valid = res.valid_actions
        flag = " [red](invalid)[/]" if res.invalid else ""
        console.print(f"{escape(res.text)}{flag}  [dim]score {res.score:g}[/]")
        if res.done:
            console.print("[green]won[/]" if res.won else "[red]episode over[/]")
            return
