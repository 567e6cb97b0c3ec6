"""Agent commands: `nightowl demo`, `collect`, `run`, `report`, `calibrate` (top level)."""

from __future__ import annotations

import asyncio
import json
import math
import sys
from pathlib import Path

import typer
from rich.console import Console

from nightowl.config import get_settings

# wide enough for the demo table when output is captured (make demo | tee, CI logs)
console = Console(width=None if sys.stdout.isatty() else 140)


def _settings(threads: int | None = None):  # type: ignore[no-untyped-def]
    s = get_settings()
    if threads is not None:
        s = s.model_copy(update={"threads": threads})
    return s


def demo(
    env: str = typer.Option("tw", help="environment (tw, twx, ...)"),
    game: str = typer.Option("coin_collector", help="game inside the environment ('' = all)"),
    train_tasks: int = typer.Option(12, help="training tasks the oracle plays for demos"),
    test_tasks: int = typer.Option(6, help="held-out test tasks per configuration"),
    max_steps: int = typer.Option(10, help="step budget per test episode"),
    student_dtype: str = typer.Option(
        "bfloat16", help="dtype of the in-process student ('' = the registry's)"
    ),
    rule: str = typer.Option("unanimity:3", help="cascade acceptance rule"),
    temperature: float = typer.Option(0.5, help="student sampling temperature for votes"),
    margin: float = typer.Option(1.0, help="logprob-margin threshold (nightowl calibrate)"),
    configs: str = typer.Option(
        "teacher,student,student+demos,cascade,margin", help="comma-separated configurations"
    ),
    concurrency: int = typer.Option(4, help="episodes in flight"),
    out: str = typer.Option("", help="JSON report path (default .nightowl/reports/demo-*.json)"),
    keep: bool = typer.Option(False, help="keep the previous demo database"),
) -> None:
    """Collect oracle demos, then compare teacher / student / demos / cascade on test tasks."""
    from nightowl.distill.demo import DemoOptions, run_demo

    opts = DemoOptions(
        env=env, game=game or None, train_tasks=train_tasks, test_tasks=test_tasks,
        max_steps=max_steps, rule=rule, temperature=temperature, margin=margin,
        configs=[c.strip() for c in configs.split(",") if c.strip()],
        concurrency=concurrency, out=Path(out) if out else None, fresh=not keep,
        student_dtype=student_dtype or None,
    )
    asyncio.run(run_demo(_settings(), opts, console))


def collect(
    env: str = typer.Option(..., help="environment name"),
    teacher: str = typer.Option("oracle", help="'oracle' (the env's expert) or a model name"),
    split: str = typer.Option("train"),
    tasks: int = typer.Option(20, help="how many tasks"),
    game: str = typer.Option("", help="only this game"),
    max_steps: int = typer.Option(40),
    concurrency: int = typer.Option(4),
) -> None:
    """The teacher solves tasks concurrently; successful episodes become demos."""
    from nightowl.agent.budget import EpisodeBudget
    from nightowl.agent.runner import RunSpec, Workbench, add_demos, run_tasks, select_tasks

    s = _settings()
    wb = Workbench.open(s)
    ids = select_tasks(env, split, tasks, game=game or None)
    summ = asyncio.run(
        run_tasks(
            wb,
            RunSpec(
                name=f"collect:{env}", env=env, split=split, task_ids=ids, ladder="teacher",
                teacher=teacher, budget=EpisodeBudget(max_steps=max_steps), retrieve=False,
                concurrency=concurrency, kind="collect",
            ),
        )
    )
    n = add_demos(wb, summ)
    wb.close()
    console.print(
        f"run {summ.run_id}: {summ.successes}/{summ.episodes} successful, {n} demos added, "
        f"collection cost ${summ.total_cost:.5f}"
    )


def run(
    env: str = typer.Option(..., help="environment name"),
    split: str = typer.Option("test"),
    tasks: int = typer.Option(10),
    game: str = typer.Option(""),
    ladder: str = typer.Option("cascade", help="teacher|student|student+demos|cascade|margin|bavt"),
    rule: str = typer.Option(
        "unanimity:3", help="unanimity:N | majority:N:TAU | sequential:N:TAU | margin:T"
    ),
    temperature: float = typer.Option(0.5),
    teacher: str = typer.Option("oracle"),
    student: str = typer.Option("", help="student model (default: settings.student_model)"),
    max_steps: int = typer.Option(20),
    max_cost: float = typer.Option(0.0, help="USD per episode (0 = unlimited)"),
    max_teacher_calls: int = typer.Option(-1, help="per episode (-1 = unlimited)"),
    concurrency: int = typer.Option(4),
    store_escalations: bool = typer.Option(True, help="successful escalated episodes become demos"),
    resume: str = typer.Option("", help="resume this run id (after a crash or kill)"),
) -> None:
    """Run a ladder over tasks as one ledger run (resumable)."""
    from nightowl.agent.budget import EpisodeBudget
    from nightowl.agent.runner import RunSpec, Workbench, run_tasks, select_tasks
    from nightowl.distill.demo import summary_table

    s = _settings()
    wb = Workbench.open(s)
    ids = select_tasks(env, split, tasks, game=game or None)
    budget = EpisodeBudget(
        max_steps=max_steps,
        max_cost_usd=max_cost or None,
        max_teacher_calls=None if max_teacher_calls < 0 else max_teacher_calls,
    )
    spec = RunSpec(
        name=ladder, env=env, split=split, task_ids=ids, ladder=ladder, rule=rule,
        temperature=temperature, teacher=teacher, student=student or None, budget=budget,
        concurrency=concurrency, store_escalations=store_escalations, run_id=resume or None,
    )

    def done(res) -> None:  # type: ignore[no-untyped-def]
        outcome = "won" if res.success else "lost"
        console.print(f"  {res.task_id}: {outcome} in {res.steps} steps ({res.reason})")

    summ = asyncio.run(run_tasks(wb, spec, on_done=done))
    wb.close()
    console.print(summary_table([summ], f"run {summ.run_id}"))


def report(
    run_id: str = typer.Argument(..., help="run id (or a unique prefix)"),
    json_out: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Success, cost per episode, cost-of-pass and teacher-call fraction of a run."""
    from nightowl.agent.runner import Workbench

    wb = Workbench.open(_settings())
    rid = wb.ledger.resolve_run_id(run_id)
    rep = wb.ledger.run_report(rid)
    if json_out:
        console.print_json(rep.model_dump_json())
        return
    from rich.table import Table

    t = Table(title=f"run {rid}")
    t.add_column("metric")
    t.add_column("value", justify="right")
    cop = rep.cost_of_pass
    for k, v in (
        ("episodes", f"{rep.n_episodes}"),
        ("success rate", f"{rep.success_rate:.0%}"),
        ("total cost", f"${rep.total_cost:.5f}"),
        ("cost per episode", f"${rep.cost_per_episode:.5f}"),
        ("cost-of-pass", "inf" if cop is None or math.isinf(cop) else f"${cop:.5f}"),
        ("teacher-call fraction (ledger)", f"{rep.teacher_call_fraction:.2f}"),
    ):
        t.add_row(k, v)
    for role, st in rep.roles.items():
        t.add_row(f"{role} calls / cost", f"{st.calls} / ${st.cost_usd:.5f}")
    console.print(t)


def calibrate(
    env: str = typer.Option(..., help="environment name"),
    target: float = typer.Option(0.8, help="target success rate on the dev split"),
    tasks: int = typer.Option(6, help="dev tasks"),
    game: str = typer.Option(""),
    temperatures: str = typer.Option("0.3,0.5,0.7"),
    out: str = typer.Option("", help="write the calibration JSON here"),
) -> None:
    """Pick N, tau (and the logprob margin) on the dev split for a target success at least cost."""
    from nightowl.distill.calibrate import CalibrateOptions, run_calibration

    opts = CalibrateOptions(
        env=env, game=game or None, tasks=tasks, target=target,
        temperatures=[float(x) for x in temperatures.split(",") if x.strip()],
    )
    res = asyncio.run(run_calibration(_settings(), opts, console))
    if out:
        Path(out).write_text(json.dumps(res, indent=1, default=str))
        console.print(f"written: {out}")


def register(app: typer.Typer) -> None:
    """Add the top-level agent commands to the root app."""
    app.command("demo")(demo)
    app.command("collect")(collect)
    app.command("run")(run)
    app.command("report")(report)
    app.command("calibrate")(calibrate)
