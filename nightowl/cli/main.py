"""The `nightowl` command: a root typer app with one sub-app per subsystem.

Each subsystem's commands live in their own module under `nightowl.cli` and are
registered below. User mistakes (`UserError`) print one line and exit with code 2.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import typer  # noqa: E402

from nightowl.cli._agent import calibrate, collect, demo, report, run  # noqa: E402
from nightowl.cli._envs import envs_app  # noqa: E402
from nightowl.cli._info import info, schema  # noqa: E402
from nightowl.cli._ledger import db_app, ledger_app  # noqa: E402
from nightowl.cli._memory import memory_app  # noqa: E402
from nightowl.cli._models import models_app  # noqa: E402
from nightowl.cli._serve import keys_app, serve  # noqa: E402
from nightowl.cli._sleep import sleep_app  # noqa: E402
from nightowl.cli._worker import worker  # noqa: E402
from nightowl.errors import NightowlError, UserError  # noqa: E402
from nightowl.telemetry import setup_tracing  # noqa: E402

app = typer.Typer(
    name="nightowl",
    help="nightowl: cheap LLM agents via in-context distillation, escalation and "
    "sleep-time compute.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # click's plain help (not rich's option table): option names are never cut at 80
    # columns and boolean flags read as flags (`--json`), not `--json <bool>`.
    rich_markup_mode=None,
)

# Each module keeps its commands thin; a command is named after its function.
for command in (demo, collect, run, report, calibrate, worker, info, schema, serve):
    app.command()(command)
for name, sub_app in (("db", db_app), ("envs", envs_app), ("ledger", ledger_app),
                      ("memory", memory_app), ("models", models_app), ("sleep", sleep_app),
                      ("keys", keys_app)):
    app.add_typer(sub_app, name=name)


def main() -> None:
    """Entry point: run the app, turning user mistakes into one-line errors."""
    try:
        setup_tracing()  # OTLP traces only when configured (docs/traces.md); else nothing
        app()
    except UserError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except NightowlError as exc:
        # A run-time failure (model server, store, environment): one line, exit 1;
        # whatever was recorded before it stays recorded.
        typer.secho(f"error: {type(exc).__name__}: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
