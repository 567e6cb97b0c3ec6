"""`nightowl models ...`: list the registry, try a model, serve one over HTTP."""

from __future__ import annotations

import asyncio
import json
from contextlib import ExitStack
from functools import partial
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from nightowl.cli._errors import one_line_errors
from nightowl.cli._fit import fit
from nightowl.errors import NightowlError, UserError

models_app = typer.Typer(
    help="Model registry: list entries, try one, serve one over the OpenAI protocol.",
    no_args_is_help=True,
)


def _usd(x: float) -> str:
    return f"${x:.8f}".rstrip("0").rstrip(".") if x else "$0"


@models_app.command("list")
def list_models(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Registry entries: backend, target, prices (USD per 1M tokens)."""
    from nightowl.config import load_settings

    with one_line_errors():
        settings = load_settings()
        rows: list[dict[str, Any]] = [
            {
                "name": name,
                "backend": spec.backend,
                "model": str(spec.params.get("model") or spec.params.get("gguf_file") or ""),
                "where": str(spec.params.get("base_url", "in-process")),
                "prices": spec.prices.model_dump(),
                "description": spec.description,
            }
            for name, spec in sorted(settings.models.items())
        ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="models (prices: USD per 1M tokens)")
    for col in ("name", "backend", "model", "where", "input", "cached", "output"):
        numeric = col in ("input", "cached", "output")
        table.add_column(col, justify="right" if numeric else "left", overflow="fold")
    for r in rows:
        p = r["prices"]
        table.add_row(
            r["name"], r["backend"], r["model"], r["where"],
            f"{p['input']:g}", f"{p['cached_input']:g}", f"{p['output']:g}",
        )  # fmt: skip
    Console().print(fit(table))


@models_app.command("try")
def try_model(
    name: Annotated[str, typer.Argument(help="registry name, e.g. smollm2")],
    prompt: Annotated[str, typer.Argument(help="the user message (or raw prompt with --raw)")],
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, max=32_768)] = 128,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, max=2.0)] = 0.0,
    n: Annotated[int, typer.Option("--n", min=1, max=64, help="samples")] = 1,
    seed: Annotated[int | None, typer.Option("--seed", min=0, max=2**32 - 1)] = None,
    raw: Annotated[bool, typer.Option("--raw", help="send PROMPT as a raw completion")] = False,
    system: Annotated[str | None, typer.Option("--system", help="a system message")] = None,
    record: Annotated[
        bool, typer.Option("--record/--no-record", help="record the call in the cost ledger")
    ] = True,
) -> None:
    """Send one prompt; print the completion, token usage and cost."""
    from nightowl.app import Nightowl
    from nightowl.config import load_settings
    from nightowl.llm.base import ChatMessage, GenerationRequest, require_text
    from nightowl.llm.registry import build_backend

    with one_line_errors(), ExitStack() as stack:
        settings = load_settings()
        spec = settings.model(name)
        if not prompt.strip():
            raise UserError("PROMPT is empty")
        sampled = partial(
            GenerationRequest, n=n, max_tokens=max_tokens, temperature=temperature, seed=seed
        )
        if raw:
            request = sampled(prompt=prompt)
        else:
            turns = [ChatMessage(role="system", content=system)] if system else []
            turns.append(ChatMessage(role="user", content=prompt))
            request = sampled(messages=tuple(turns))
        backend = build_backend(name, settings)
        run_id = None
        if record:  # metered by the root's ledger (role "try"), if a database is usable
            try:
                no = stack.enter_context(Nightowl.open(settings))  # open until the end
                rid = no.ledger.start_run(f"models try {name}", kind="try", config={"model": name})
                backend, run_id = no.model(name, run_id=rid, role="try"), rid
            except NightowlError as exc:
                typer.secho(f"warning: not recorded in the ledger: {exc}", err=True)
        result = asyncio.run(backend.generate(request))
        for i, c in enumerate(result.completions):
            head = f"[{i}] " if n > 1 else ""
            typer.echo(f"{head}{c.text}")
        u = result.usage
        cost = spec.prices.cost(u.prompt_tokens, u.cached_prompt_tokens, u.completion_tokens)
        finish = ",".join(sorted({c.finish_reason for c in result.completions}))
        typer.echo(
            f"usage: prompt {u.prompt_tokens} (cached {u.cached_prompt_tokens}), "
            f"completion {u.completion_tokens}, total {u.total_tokens} tokens; "
            f"finish {finish}; {result.latency_s:.2f}s"
        )
        typer.echo(
            f"cost: {_usd(cost)} (USD at {spec.prices.input:g} in / "
            f"{spec.prices.cached_input:g} cached / {spec.prices.output:g} out per 1M tokens)"
            + (f"; ledger run {run_id}" if run_id else "")
        )
        require_text(result)  # empty or cut-off answer -> one-line error, exit 1


@models_app.command("serve")
def serve(
    name: Annotated[str, typer.Argument(help="registry name, e.g. smollm2")],
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8000,
    keys: Annotated[
        bool, typer.Option("--keys/--no-keys", help="require bearer keys (`nightowl keys`)")
    ] = False,
    insecure_bind: Annotated[
        bool, typer.Option(help="allow a non-loopback --host without --keys")
    ] = False,
    max_concurrency: Annotated[int | None, typer.Option(min=1, max=4096)] = None,
    key_concurrency: Annotated[int | None, typer.Option(min=1, max=4096)] = None,
    key_rate: Annotated[str | None, typer.Option(help="per key, e.g. 20/second")] = None,
    max_body_bytes: Annotated[int | None, typer.Option(min=1024, max=1 << 30)] = None,
) -> None:
    """Serve a registry model over the OpenAI protocol (/v1/chat/completions, ...).

    Limits not given as flags come from NIGHTOWL_SERVE_* settings (docs/servers.md).
    """
    from nightowl.config import load_settings
    from nightowl.llm.registry import build_backend
    from nightowl.llm.serve import create_app
    from nightowl.llm.serve_limits import check_bind, load_limits

    with one_line_errors(), ExitStack() as stack:
        check_bind(host, has_keys=keys, insecure=insecure_bind)
        limits = load_limits(
            max_concurrency=max_concurrency, key_concurrency=key_concurrency,
            key_rate=key_rate, max_body_bytes=max_body_bytes,
        )  # fmt: skip
        settings = load_settings()
        authenticate = None
        if keys:  # only a keyed server needs the database
            from nightowl.app import Nightowl

            no = stack.enter_context(Nightowl.open(settings))
            authenticate = _key_authenticator(no.keys)
        backend = build_backend(name, settings)
        typer.echo(f"serving {name!r} at http://{host}:{port}/v1", err=True)
        import uvicorn

        served = create_app(backend, limits=limits, authenticate=authenticate)
        uvicorn.run(served, host=host, port=port, log_level="info")


def _key_authenticator(store: Any) -> Any:
    """A key check (token -> key id, tenant) over the key store of `nightowl keys`."""

    def authenticate(token: str) -> tuple[str, str] | None:
        key = store.authenticate(token)
        return None if key is None else (key.id, key.tenant)

    return authenticate
