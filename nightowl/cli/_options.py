"""CLI options shared by several commands (defined once), and the root they open."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from nightowl.agent.acceptance import rule_syntax
from nightowl.agent.budget import DEFAULT_MAX_STEPS
from nightowl.agent.presets import ladder_syntax

if TYPE_CHECKING:
    from nightowl.app import Nightowl

#: the database of a command that opens one (``--db``)
DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="SQLAlchemy database URL (default: NIGHTOWL_DATABASE_URL, nightowl.toml, "
        "or SQLite in the data home: nightowl info)",
        show_default=False,
    ),
]

ENV = typer.Option(..., help="environment name (nightowl envs list)")
GAME = typer.Option("", help="only this game inside the environment ('' = all)")
#: one default step budget for every command (`run` had 20 and calibrate's rollouts 30)
MAX_STEPS = typer.Option(
    None, min=1, max=10_000, show_default=False,
    help=f"step budget per episode [default: the environment's; {DEFAULT_MAX_STEPS} for "
    "every built-in one, the one default of every command (run used 20 before)]",
)
STUDENT_DTYPE = typer.Option(
    "", help="dtype of the in-process student: auto, float32, bfloat16 or float16 ('' = the "
    "registry's, chosen per machine); recorded with the run",
)
CONCURRENCY = typer.Option(4, min=1, max=256, help="episodes in flight")
TEACHER = typer.Option("oracle", help="'oracle' (the env's expert) or a registry model name")
STUDENT = typer.Option("", help="student model (default: settings.student_model)")
RULE = typer.Option("", help=f"acceptance rule: {rule_syntax()} ('' = the ladder's default)")
LADDER = typer.Option("cascade", help=ladder_syntax())
TEMPERATURE = typer.Option(0.5, min=0.0, max=2.0, help="student sampling temperature for votes")
REPEATS = typer.Option(
    "explore", help="a student action already taken in the same state: explore (take "
    "another) or escalate (ask the teacher); nightowl calibrate chooses per family",
)
BACKTRACK = typer.Option(
    "avoid", help="the move back through the exit just used: avoid (while another exit "
    "is open; a dead end still walks back) or allow",
)
DEMOS_PER = typer.Option(
    "step", help="retrieve demos every step, or once per episode (stable cached prefix)"
)


def open_root(db: str | None = None, *, migrate: bool = True) -> Nightowl:
    """The composition root over ``--db`` (default: the configured database), settings read now.

    ``migrate=False`` opens the database as it is (for inspecting its revisions).
    """
    from nightowl.app import Nightowl
    from nightowl.config import load_settings

    return Nightowl.open(load_settings(), db_url=db, migrate=migrate)
