"""`nightowl sleep ...`: add contexts, precompute learned contexts, ask questions."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from nightowl.cli._errors import one_line_errors
from nightowl.cli._fit import fit
from nightowl.cli._options import open_root
from nightowl.errors import UserError

sleep_app = typer.Typer(
    help="Sleep-time compute: think about known contexts while idle, answer cheaply later.",
    no_args_is_help=True,
)
console = Console()


def decode_text(data: bytes, source: str, *, binary_ok: bool = False) -> str:
    """``data`` as UTF-8 text; NUL bytes or invalid UTF-8 are a one-line `UserError`.

    A context is text a model reads; a binary file stored as one is a mistake, and NUL
    cannot be stored in a PostgreSQL text column at all. With ``binary_ok`` the bytes
    are decoded leniently (invalid sequences and NUL become U+FFFD).
    """
    if binary_ok:
        return data.decode("utf-8", errors="replace").replace("\x00", "\ufffd")
    if b"\x00" in data:
        at = data.index(b"\x00")
        raise UserError(
            f"{source} looks binary (NUL byte at offset {at}); contexts are text "
            "(pass --binary-ok to store it anyway, with NUL and invalid bytes replaced)"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{source} is not UTF-8 text (invalid byte at offset {exc.start}); "
            "convert it, or pass --binary-ok to replace invalid bytes"
        ) from None


def _read(path: Path, binary_ok: bool = False) -> str:
    if str(path) == "-":
        import sys

        return decode_text(sys.stdin.buffer.read(), "standard input", binary_ok=binary_ok)
    if not path.is_file():
        raise UserError(f"no such file: {path}")
    return decode_text(path.read_bytes(), str(path), binary_ok=binary_ok)


BINARY_OK = typer.Option(
    False, "--binary-ok", help="store a file with NUL or non-UTF-8 bytes (they are replaced)"
)


@sleep_app.command("add")
def add(
    file: Annotated[Path, typer.Argument(help="text file with the context ('-' for stdin)")],
    kind: str = typer.Option("document", help="document, conversation or environment"),
    name: str = typer.Option("", help="a name to refer to the context by"),
    binary_ok: bool = BINARY_OK,
) -> None:
    """Store a context; prints its id."""
    with one_line_errors():
        text = _read(file, binary_ok)
        with open_root() as no:
            ctx = no.sleep.store.add_context(text, kind=kind, name=name or file.name)
    typer.echo(ctx.id)


@sleep_app.command("update")
def update(
    context: Annotated[str, typer.Argument(help="context id, id prefix or name")],
    file: Annotated[Path, typer.Argument(help="new text ('-' for stdin)")],
    append: bool = typer.Option(False, help="append (a new conversation turn) instead of replace"),
    binary_ok: bool = BINARY_OK,
) -> None:
    """Change a context; its learned context becomes stale (never used while stale)."""
    with one_line_errors():
        text = _read(file, binary_ok)
        with open_root() as no:
            store = no.sleep.store
            ctx = store.append(context, text) if append else store.set_content(context, text)
    typer.echo(f"{ctx.id} revision {ctx.revision}")


@sleep_app.command("list")
def list_contexts(
    as_json: bool = typer.Option(False, "--json", help="print JSON (a list of rows)"),
) -> None:
    """Contexts with the state of their learned context and their queue priority."""
    from nightowl.cli._schemas import ContextRow
    from nightowl.sleeptime.policy import rank

    with open_root() as no:
        svc = no.sleep
        contexts = svc.store.list_contexts()
        pending = {w.context.id: w for w in svc.plan()}
        ranked = {w.context.id: w for w in rank(svc.store, [(c, "") for c in contexts])}
        counts = svc.store.query_counts()
        rows: list[ContextRow] = []
        for ctx in contexts:
            status, learned = svc.store.fresh_learned(ctx)
            rows.append(ContextRow(
                id=ctx.id, name=ctx.name, kind=ctx.kind, revision=ctx.revision,
                learned_status=status, learned_version=learned.version if learned else None,
                queries=counts.get(ctx.id, 0), priority=ranked[ctx.id].priority,
                needs=pending[ctx.id].reason if ctx.id in pending else "",
            ))
    if as_json:
        typer.echo(json.dumps([r.model_dump(mode="json") for r in rows], indent=2))
        return
    table = Table()
    table.add_column("id", no_wrap=True, min_width=12)
    for col in ("name", "kind", "rev", "c'", "ver", "queries", "prio", "needs"):
        table.add_column(col, overflow="fold")
    for r in rows:
        ver = "-" if r.learned_version is None else str(r.learned_version)
        table.add_row(r.id[:12], r.name, r.kind, str(r.revision), r.learned_status, ver,
                      str(r.queries), f"{r.priority:.3g}", r.needs)
    console.print(fit(table))


@sleep_app.command("run")
def run(
    context: str = typer.Option(
        "", "--context", help="only this context (else every one needing a c')"
    ),
    rounds: int = typer.Option(
        0, "--rounds", min=0, max=50, help="max rethink rounds (0 = configured)"
    ),
    drafts: int = typer.Option(
        0, "--drafts", min=0, max=16, help="parallel first drafts (0 = configured)"
    ),
    in_process: bool = typer.Option(
        False, "--in-process", help="run here even when a broker is configured"
    ),
    max_wait: float = typer.Option(
        600.0, min=0.0, max=86_400.0, help="seconds to wait for an idle accelerator per job"
    ),
) -> None:
    """Compute learned contexts: enqueue to workers, or run in-process with no broker."""
    from nightowl.sleeptime.runner import RunnerEvent, run_jobs

    with open_root() as app:
        svc = app.sleep
        config = svc.sleep.generator(max_rounds=rounds or None, drafts=drafts or None)
        # one context (by id, prefix or name), else every one needing a c', by priority
        refs = ([svc.store.get(context).id] if context
                else [w.context.id for w in svc.plan(measure=svc.probe.check().idle)])
        if not refs:
            typer.echo("nothing to do: every context has a fresh learned context")
            return
        if svc.settings.broker_url and not in_process:
            from nightowl.workers.app import default_queue

            queue = default_queue()
            ids = [queue.enqueue_learn(ref, config) for ref in refs]
            for ref, task_id in zip(refs, ids, strict=True):
                typer.echo(f"enqueued {ref[:12]} task {task_id}")
            return

        def show(ev: RunnerEvent) -> None:
            o = ev.outcome
            if o.status in ("stored", "exists"):
                typer.echo(
                    f"{o.context_id[:12]} {o.status}: c' #{o.learned_id}, {o.rounds} rounds "
                    f"({o.stop_reason}), {o.completion_tokens} tokens, ${o.cost_usd:.6f}"
                )
            else:
                typer.echo(
                    f"{o.context_id[:12]} {o.status}: {o.detail}; retry in {o.retry_in_s:.0f}s"
                )

        with console.status(f"thinking about {len(refs)} context(s) with {config.model}"):
            outcomes = run_jobs(svc, refs, config=config, max_wait_s=max_wait, on_event=show)
        left = [o for o in outcomes if o.status not in ("stored", "exists")]
        if left:
            typer.echo(f"{len(left)} job(s) still pending (run again when serving is idle)")


@sleep_app.command("ask")
def ask(
    context: str = typer.Argument(..., help="context id, id prefix or name"),
    question: str = typer.Argument(...),
    budget: str = typer.Option("mid", help="test-time budget: low, mid or high"),
    mode: str = typer.Option("with", help="with: c and c'; instead: c' replaces c"),
    no_learned: bool = typer.Option(False, "--no-learned", help="ignore c' (baseline)"),
    as_json: bool = typer.Option(False, "--json", help="print the answer as JSON"),
) -> None:
    """Answer a question about a context, using its fresh learned context if any."""
    with open_root() as no:
        res = asyncio.run(
            no.sleep.ask(context, question, budget=budget, mode=mode, use_learned=not no_learned)
        )
    if as_json:
        from dataclasses import asdict

        from nightowl.cli._schemas import AnswerOut

        typer.echo(AnswerOut(**asdict(res)).model_dump_json(indent=2))
        return
    typer.echo(res.text)
    used = f"yes ({res.mode}, c' #{res.learned_id})" if res.used_learned else "no"
    typer.echo(
        f"--\nanswer: {res.final}\nlearned context: {used}; status {res.learned_status}\n"
        f"tokens: {res.prompt_tokens} prompt + {res.completion_tokens} completion; "
        f"cost ${res.cost_usd:.6f}"
    )


@sleep_app.command("show")
def show(context: str = typer.Argument(..., help="context id, id prefix or name")) -> None:
    """Print a context's newest learned context."""
    with open_root() as no:
        ctx = no.sleep.store.get(context)
        status, learned = no.sleep.store.fresh_learned(ctx)
    if learned is None:
        raise UserError(
            f"context {ctx.id[:12]} has no learned context yet (run `nightowl sleep run`)"
        )
    typer.echo(
        f"c' #{learned.id} v{learned.version} ({status}), {learned.rounds} rounds, "
        f"stop {learned.stop_reason}, {learned.completion_tokens} tokens, ${learned.cost_usd:.6f}\n"
    )
    typer.echo(learned.text)
