"""`nightowl memory ...`: inspect, rebuild and search the demo memory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from nightowl.cli._fit import fit
from nightowl.cli._options import DbOption

if TYPE_CHECKING:
    from nightowl.app import Nightowl

memory_app = typer.Typer(
    help="Demo memory: recorded steps, demo episodes, FAISS indexes, retrieval.",
    no_args_is_help=True,
)

IndexDirOption = Annotated[
    Path | None,
    typer.Option(
        "--index-dir",
        help="folder of the FAISS indexes (default: <db dir>/indexes, or <home>/indexes)",
        show_default=False,
    ),
]
EmbedderOption = Annotated[
    str | None,
    typer.Option(
        "--embedder",
        help="embedding model (default: settings.embedder, all-MiniLM-L6-v2); "
        "'hashing-fake' is the test fake",
        show_default=False,
    ),
]


def _open(db: str | None, index_dir: Path | None, embedder: str | None) -> Nightowl:
    """The composition root whose ``memory`` is the one these options name."""
    from nightowl.app import Nightowl
    from nightowl.config import load_settings

    settings = load_settings()
    if embedder:
        settings = settings.model_copy(update={"embedder": embedder})
    return Nightowl.open(settings, db_url=db, memory_dir=index_dir)


@memory_app.command("stats")
def stats(
    db: DbOption = None,
    index_dir: IndexDirOption = None,
    embedder: EmbedderOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Counts of steps, demos and demo steps, and the state of each index."""
    with _open(db, index_dir, embedder) as no:
        st = no.demo_memory("nightowl memory stats").stats()
    if as_json:
        typer.echo(st.model_dump_json(indent=2))
        return
    console = Console()
    console.print(
        f"demos: {st.demos}   demo steps: {st.demo_steps}   recorded steps: {st.steps}   "
        f"embedding: {st.embedding_model} ({st.dim} dims)"
    )
    table = Table(title=f"indexes in {st.index_dir}")
    for col in ("key", "rows", "type", "saved", "on open"):
        table.add_column(col)
    for key, info in st.indexes.items():
        table.add_row(key, str(info["rows"]), info["type"], str(info["saved"]), info["last_open"])
    console.print(fit(table))


@memory_app.command("rebuild")
def rebuild(
    db: DbOption = None,
    index_dir: IndexDirOption = None,
    embedder: EmbedderOption = None,
    reembed: Annotated[
        bool, typer.Option("--reembed", help="re-embed every text instead of reusing SQL vectors")
    ] = False,
) -> None:
    """Rebuild every index from SQL (the source of truth)."""
    with _open(db, index_dir, embedder) as no:
        counts = no.demo_memory("nightowl memory rebuild").rebuild(reembed=reembed)
    typer.echo("rebuilt: " + ", ".join(f"{k}={v}" for k, v in counts.items()))


@memory_app.command("delete-run")
def delete_run(
    run_id: Annotated[str, typer.Argument(help="run id (or a unique prefix)")],
    db: DbOption = None,
    index_dir: IndexDirOption = None,
    embedder: EmbedderOption = None,
) -> None:
    """Stop using a run's episodes as demos (their recorded steps stay for audit)."""
    with _open(db, index_dir, embedder) as no:
        mem = no.memory
        rid = no.ledger.resolve_run_id(run_id)
        n = mem.delete_run(rid)
    typer.echo(f"deleted {n} demo episode(s) of run {rid}")


@memory_app.command("search")
def search(
    goal: Annotated[str, typer.Argument(help="the goal to find demos for")],
    obs: Annotated[str, typer.Option("--obs", help="the current observation")] = "",
    history: Annotated[
        list[str] | None, typer.Option("--action", help="an earlier action (repeatable)")
    ] = None,
    k_episodes: Annotated[int, typer.Option("--k-episodes", "-k", min=1, max=100)] = 4,
    k_steps: Annotated[int, typer.Option("--k-steps", min=1, max=100)] = 2,
    window: Annotated[int, typer.Option("--window", min=0, max=100)] = 2,
    exclude_task: Annotated[
        list[str] | None, typer.Option("--exclude-task", help="task id to skip (repeatable)")
    ] = None,
    db: DbOption = None,
    index_dir: IndexDirOption = None,
    embedder: EmbedderOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Show the demo windows retrieved for a goal and observation."""
    with _open(db, index_dir, embedder) as no:
        windows = no.memory.retrieve(
            goal,
            obs or goal,
            [("", a) for a in (history or [])],
            k_episodes=k_episodes,
            k_steps=k_steps,
            window=window,
            exclude_task_ids=tuple(exclude_task or ()),
        )
    if as_json:
        typer.echo(json.dumps([w.model_dump() for w in windows], indent=2, default=str))
        return
    console = Console()
    if not windows:
        console.print("no demos retrieved (the memory is empty or everything was excluded)")
        return
    for w in windows:
        table = Table(
            title=f"#{w.rank} {w.goal[:80]!r}  task={w.task_id}  "
            f"goal cos={w.episode_score:.3f} step score={w.step_score:.3f}",
            title_justify="left",
        )
        table.add_column("idx", justify="right")
        table.add_column("actor")
        table.add_column("observation", overflow="fold", max_width=70)
        table.add_column("action")
        for st in w.steps:
            mark = "*" if st.idx in w.hit_idxs else ""
            table.add_row(f"{mark}{st.idx}", st.actor, st.observation[-300:], st.action)
        console.print(fit(table))
