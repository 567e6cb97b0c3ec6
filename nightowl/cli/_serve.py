"""`nightowl serve` (the chat assistant over the OpenAI protocol) and `nightowl keys`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from nightowl.cli._errors import one_line_errors
from nightowl.cli._options import open_root

keys_app = typer.Typer(
    help="API keys of `nightowl serve` (stored hashed in SQL).", no_args_is_help=True
)


def serve(
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8000,
    student: Annotated[str | None, typer.Option(help="registry name (default: settings)")] = None,
    teacher: Annotated[str | None, typer.Option(help="registry name of the teacher")] = None,
    oracle: Annotated[Path | None, typer.Option(help="JSON {question: answer} oracle")] = None,
    n: Annotated[int, typer.Option(min=1, max=16, help="student samples per turn")] = 3,
    tau: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.01, help="agreement to accept (default 2/3: 2 of 3 agree)"),
    ] = None,
    max_tokens: Annotated[int, typer.Option(min=1, max=32_768, help="default reply tokens")] = 192,
    demos: Annotated[bool, typer.Option(help="keep teacher replies as tenant demos")] = True,
    sleep: Annotated[bool, typer.Option(help="rethink idle threads in the background")] = False,
    sleep_idle_s: Annotated[float, typer.Option(min=0.0, max=86_400.0)] = 30.0,
    thread_budget: Annotated[
        float | None, typer.Option(min=0.0, max=1e6, help="USD budget per thread")
    ] = None,
    auth: Annotated[bool, typer.Option(help="require bearer API keys")] = True,
    insecure_bind: Annotated[
        bool, typer.Option(help="allow --no-auth on a non-loopback --host")
    ] = False,
    max_concurrency: Annotated[
        int | None, typer.Option(min=1, max=4096, help="in flight, whole server")
    ] = None,
    key_concurrency: Annotated[
        int | None, typer.Option(min=1, max=4096, help="in flight per key")
    ] = None,
    key_rate: Annotated[str | None, typer.Option(help="per key, e.g. 20/second")] = None,
    max_body_bytes: Annotated[int | None, typer.Option(min=1024, max=1 << 30)] = None,
    max_prompt_chars: Annotated[int | None, typer.Option(min=100, max=10_000_000)] = None,
    access_log: Annotated[
        bool, typer.Option(help="one line per request on stderr (method, path, key id, "
                                "status, ms, tier)")
    ] = True,
) -> None:
    """Serve the chat cascade at /v1/chat/completions (+ /v1/models, /health, /metrics).

    Limits not given as flags come from NIGHTOWL_SERVE_* settings (docs/servers.md).
    """
    with one_line_errors():
        from nightowl.app import Nightowl
        from nightowl.chat import AssistantConfig
        from nightowl.config import load_settings
        from nightowl.llm.serve_limits import check_bind, load_limits
        from nightowl.server import build_app
        from nightowl.server.access import configure_access_log
        from nightowl.server.service import ServerConfig

        check_bind(host, has_keys=auth, insecure=insecure_bind)
        limits = load_limits(
            max_concurrency=max_concurrency, key_concurrency=key_concurrency,
            key_rate=key_rate, max_body_bytes=max_body_bytes, max_prompt_chars=max_prompt_chars,
        )  # fmt: skip
        settings = load_settings()
        rethink_queue = None
        if sleep and settings.broker_url:  # idle threads are rethought by `nightowl worker`s
            from nightowl.workers.app import default_queue

            celery, model = default_queue(), student or settings.student_model

            def rethink_queue(thread_id: str, revision: int) -> str:
                return celery.enqueue_thread_rethink(thread_id, revision, model=model)

        config = AssistantConfig(
            student=student,
            teacher=teacher,
            n=n,
            **({} if tau is None else {"tau": tau}),
            max_tokens=max_tokens,
            demos=demos,
            sleep=sleep,
            sleep_idle_s=sleep_idle_s,
            thread_budget_usd=thread_budget,
        )
        server_config = ServerConfig(require_key=auth, limits=limits)
        with Nightowl.open(settings) as no:
            app = build_app(
                no, config, server_config, oracle_path=oracle, rethink_queue=rethink_queue,
                access_log=access_log,
            )
            configure_access_log(access_log)
            import uvicorn

            typer.echo(f"nightowl serve at http://{host}:{port}/v1", err=True)
            typer.echo(startup_line(settings, student=student, teacher=teacher, oracle=oracle,
                                    n=n, tau=tau, sleep=sleep, auth=auth), err=True)
            if teacher is None and oracle is None:
                typer.secho("warning: no --teacher: replies go out on student agreement alone; "
                            "a reply whose samples disagree is not checked by anyone",
                            fg=typer.colors.YELLOW, err=True)
            # nightowl.access replaces uvicorn's access log: one line per request.
            uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="a label for the key")],
    tenant: Annotated[str | None, typer.Option(help="namespace for threads and demos")] = None,
    budget: Annotated[
        float | None, typer.Option(min=0.0, max=1e6, help="USD budget of the key")
    ] = None,
) -> None:
    """Create a key; prints it once (only its hash is stored)."""
    with one_line_errors(), open_root() as no:
        plaintext, key = no.keys.create(name, tenant=tenant, budget_usd=budget)
        typer.echo(plaintext)
        typer.echo(f"id {key.id[:12]}  tenant {key.tenant}", err=True)


@keys_app.command("list")
def list_keys(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON (never the keys)")] = False,
) -> None:
    """Keys: id, prefix, name, tenant, spend / budget, state."""
    with one_line_errors(), open_root() as no:
        from dataclasses import asdict

        from nightowl.cli._schemas import KeyRow

        keys = no.keys.list()
        if as_json:
            rows = [KeyRow(**asdict(k)).model_dump(mode="json") for k in keys]
            typer.echo(json.dumps(rows, indent=2))
            return
        for k in keys:
            budget = "-" if k.budget_usd is None else f"{k.budget_usd:g}"
            state = "revoked" if k.revoked else "active"
            typer.echo(
                f"{k.id[:12]}  {k.prefix}…  {k.name}  {k.tenant}  "
                f"${k.spent_usd:.6f}/{budget}  {state}"
            )


@keys_app.command("revoke")
def revoke(key: Annotated[str, typer.Argument(help="key id (prefix) or key prefix")]) -> None:
    """Revoke a key (requests with it get 401 from then on)."""
    with one_line_errors(), open_root() as no:
        k = no.keys.revoke(key)
        typer.echo(f"revoked {k.id[:12]} ({k.name})")


def startup_line(settings: Any, *, student: str | None, teacher: str | None,
                 oracle: Path | None, n: int, tau: float | None, sleep: bool, auth: bool) -> str:
    """Which tiers are live, in one line (printed to stderr when the server starts)."""
    from fractions import Fraction

    shown = "2/3" if tau is None else str(Fraction(tau).limit_denominator(16))
    tiers = [f"student {student or settings.student_model} (n={n}, accept at agreement "
             f">= {shown})"]
    if teacher:
        tiers.append(f"teacher {teacher}")
    elif oracle:
        tiers.append(f"oracle answers from {oracle}")
    else:
        tiers.append("no teacher")
    tiers.append("sleep-time on" if sleep else "sleep-time off")
    tiers.append("API keys required" if auth else "no API keys")
    return "tiers: " + "; ".join(tiers)

