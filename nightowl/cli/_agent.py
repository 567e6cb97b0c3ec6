"""Agent commands: `nightowl demo`, `collect`, `run`, `report`, `calibrate` (top level).

Each command parses its options, calls one use case in `nightowl.app`, and renders.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import typer
from rich.console import Console
from rich.table import Table

from nightowl.agent.budget import DEFAULT_MAX_STEPS, DEMO_MAX_STEPS
from nightowl.cli import _options as opt
from nightowl.cli._errors import exit_on_errors
from nightowl.cli._fit import fit
from nightowl.config import get_settings
from nightowl.errors import ConfigError

if TYPE_CHECKING:
    from nightowl.agent.tiers import BacktrackPolicy, RepeatPolicy
    from nightowl.app import Nightowl
    from nightowl.app.leasing import RunProgress
    from nightowl.app.plan import RunPlan

# wide enough for the demo table when output is captured (make demo | tee, CI logs)
console = Console(width=None if sys.stdout.isatty() else 140)
#: progress and notes when stdout carries --json
err_console = Console(stderr=True)
JSON = typer.Option(False, "--json", help="print the result as JSON (progress goes to stderr)")


def demo(
    env: str = typer.Option(
        "twx", help="environment (twx, tw, ...); the default family is one where the student "
        "pays (docs/results.md has every family)"
    ),
    game: str = typer.Option("peckingorder", help="game inside the environment ('' = all)"),
    train_tasks: int = typer.Option(
        12, min=1, max=100_000, help="training tasks the oracle plays for demos"
    ),
    test_tasks: int = typer.Option(
        4, min=1, max=100_000, help="held-out test tasks per configuration"
    ),
    max_steps: int | None = typer.Option(
        None, min=1, max=10_000, show_default=False,
        help=f"step budget per test episode [default: {DEMO_MAX_STEPS}, short on purpose so "
        f"the demo finishes in minutes; demo collection: the environment's, "
        f"{DEFAULT_MAX_STEPS} as every command]",
    ),
    student_dtype: str = opt.STUDENT_DTYPE,
    rule: str = typer.Option("unanimity:3", help="cascade acceptance rule"),
    temperature: float = opt.TEMPERATURE,
    margin: float = typer.Option(
        1.0, min=0.0, max=100.0, help="logprob-margin threshold (nightowl calibrate)"
    ),
    configs: str = typer.Option(
        "teacher,student,student+demos,cascade,margin", help="comma-separated configurations"
    ),
    concurrency: int = opt.CONCURRENCY,
    out: str = typer.Option("", help="JSON report path (default <home>/reports/demo-*.json)"),
    keep: bool = typer.Option(False, help="keep the previous demo database"),
    demos_per: str = opt.DEMOS_PER,
) -> None:
    """Collect oracle demos, then compare teacher / student / demos / cascade on test tasks."""
    from nightowl.app.showcase import ShowcaseOptions, run_showcase
    from nightowl.cli._progress import rich_progress
    from nightowl.cli._tables import summary_table

    steps = {"max_steps": max_steps} if max_steps else {}  # unset: the demo's own
    opts = ShowcaseOptions(
        env=env, game=game or None, train_tasks=train_tasks, test_tasks=test_tasks,
        **steps, rule=rule, temperature=temperature, margin=margin,
        configs=[c.strip() for c in configs.split(",") if c.strip()],
        concurrency=concurrency, out=Path(out) if out else None, fresh=not keep,
        student_dtype=student_dtype or None, demos_per=demos_per,
    )
    with rich_progress(console) as sink:
        rep = asyncio.run(run_showcase(get_settings(), opts, progress=sink))
    console.print(summary_table(rep.configs, rep.title))
    c = rep.collection
    console.print(f"demo collection cost: ${c.total_cost:.5f} for {c.episodes} episodes "
                  f"({c.successes} successful -> {rep.demos} demos)")
    for name in ("cascade", "margin"):
        if name in rep.break_even_episodes:
            n = rep.break_even_episodes[name]
            shown = "never (not cheaper per episode)" if n is None else f"{n:.1f} episodes"
            console.print(f"break-even n* for {name}: {shown}")
    for line in rep.verdicts.values():
        console.print(line)
    console.print("per environment family (where the student pays, where it does not yet): "
                  "docs/results.md, python bench/icd_e2e.py")
    console.print(f"report: {rep.report_path}\nplot:   {rep.plot_path}\n"
                  f"total wall time: {rep.wall_s:.0f} s")
    exit_on_errors(sink.errors)


def _ui(as_json: bool) -> Console:
    """Where progress and notes go: stderr when stdout carries JSON."""
    return err_console if as_json else console


def collect(
    env: str = opt.ENV,
    teacher: str = opt.TEACHER,
    split: str = typer.Option("train"),
    tasks: int = typer.Option(20, min=1, max=100_000, help="how many tasks"),
    game: str = opt.GAME,
    max_steps: int | None = opt.MAX_STEPS,
    student_dtype: str = opt.STUDENT_DTYPE,
    concurrency: int = opt.CONCURRENCY,
    existing: str = typer.Option(
        "skip", help="tasks this teacher already has demos of: skip (no cost) or replace "
        "(collect again; each new demo replaces the old ones of its task)",
    ),
    as_json: bool = JSON,
) -> None:
    """The teacher solves tasks concurrently; successful episodes become demos."""
    from nightowl.app import CollectRequest, collect_demos
    from nightowl.cli._progress import rich_progress

    if existing not in ("skip", "replace"):
        raise ConfigError(f"--existing must be 'skip' or 'replace', not {existing!r}")
    req = CollectRequest(env=env, teacher=teacher, split=split, tasks=tasks,
                         game=game or None, max_steps=max_steps, concurrency=concurrency,
                         existing=cast("Any", existing), student_dtype=student_dtype or None)
    with opt.open_root() as app, rich_progress(_ui(as_json)) as sink:
        res = asyncio.run(collect_demos(app, req, progress=sink))
    if as_json:
        typer.echo(res.model_dump_json(indent=2))
        exit_on_errors(sink.errors)
        return
    skipped = f"; {len(res.skipped)} skipped (already collected)" if res.skipped else ""
    replaced = f"; {res.replaced} old demos replaced" if res.replaced else ""
    if res.run_id is None:
        console.print(f"nothing to collect: all {len(res.skipped)} tasks already have demos "
                      f"from teacher {teacher} (--existing replace collects them again)")
    else:
        console.print(
            f"run {res.run_id}: {res.successes}/{res.episodes} successful, {res.demos_added} "
            f"demos added{replaced}{skipped}, collection cost ${res.collection_cost:.5f}"
        )
    exit_on_errors(sink.errors)


def _apply_calibration(spec: Any, path: str, *, rule_given: bool) -> None:
    """Take a calibration file's rule and machine into ``spec`` (before it is resolved)."""
    from nightowl.app import CalibrationReport

    try:
        rep = CalibrationReport.model_validate_json(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--calibration {path}: not a calibration report ({exc})") from exc
    chosen = rep.chosen
    if not rule_given and chosen.get("spec") != "teacher":
        spec.rule = chosen.get("spec")  # "rule" is the table's name, e.g. "margin>=1"
        spec.temperature = float(chosen.get("temperature", spec.temperature))
        spec.repeats = chosen.get("repeats") or spec.repeats
    spec.calibrated_on = rep.machine


def _warn_calibration_dtype(app: Nightowl, plan: RunPlan) -> None:
    """Warn when the plan's student scores in another dtype than its calibration did."""
    from nightowl.llm.machine import dtype_note, scoring_machine

    if plan.calibrated_on is None:
        return
    note = dtype_note(plan.calibrated_on, scoring_machine(plan.student.backend(app)))
    if note:
        err_console.print(f"[yellow]warning:[/] {note}")


def run(
    env: str = opt.ENV,
    split: str = typer.Option("test"),
    tasks: int = typer.Option(10, min=1, max=100_000, help="how many tasks of the split"),
    offset: int = typer.Option(0, min=0, max=10_000_000, help="skip this many tasks of the "
                               "split first (--offset 20 --tasks 20: the second twenty)"),
    task_ids: str = typer.Option("", help="comma-separated task ids to run instead of a "
                                 "slice of the split (e.g. twx/coin/test/20003,...)"),
    task_file: str = typer.Option("", help="a file of task ids, one per line (# comments), "
                                  "to run instead of a slice of the split"),
    game: str = opt.GAME,
    ladder: str = opt.LADDER,
    rule: str = opt.RULE,
    temperature: float = opt.TEMPERATURE,
    repeats: str = opt.REPEATS,
    backtrack: str = opt.BACKTRACK,
    teacher: str = opt.TEACHER,
    student: str = opt.STUDENT,
    student_dtype: str = opt.STUDENT_DTYPE,
    max_steps: int | None = opt.MAX_STEPS,
    max_cost: float = typer.Option(0.0, min=0.0, max=1e6, help="USD per episode (0 = unlimited)"),
    max_teacher_calls: int = typer.Option(
        -1, min=-1, max=1_000_000, help="per episode (-1 = unlimited)"
    ),
    concurrency: int = opt.CONCURRENCY,
    store_escalations: bool = typer.Option(True, help="successful escalated episodes become demos"),
    resume: str = typer.Option("", help="resume this run id (after a crash or kill)"),
    demos_per: str = opt.DEMOS_PER,
    via: str = typer.Option(
        "local", help="local: run here; celery: one message per episode on the 'episodes' "
        "queue for `nightowl worker` processes (needs NIGHTOWL_BROKER_URL)",
    ),
    watch: bool = typer.Option(
        False, help="--via celery: show a live progress bar until the run is done (and "
        "re-queue episodes of dead workers); exit 1 if episodes failed for infrastructure "
        "reasons",
    ),
    max_wall: float = typer.Option(
        0.0, min=0.0, max=86_400.0,
        help="wall seconds per episode, then it ends as a loss (0 = unlimited)"
    ),
    calibration: str = typer.Option(
        "", help="a `calibrate --out` JSON: its chosen rule (unless --rule is given), and a "
        "warning when this run scores in another dtype than calibration did",
    ),
    as_json: bool = JSON,
) -> None:
    """Run a ladder over tasks as one ledger run (resumable; or spread over workers)."""
    from nightowl.agent.budget import EpisodeBudget
    from nightowl.app import Nightowl, RunSpec, run_tasks
    from nightowl.cli._progress import rich_progress
    from nightowl.cli._tables import summary_table
    from nightowl.envs.registry import check_task_ids, read_task_file, select_tasks

    settings = get_settings()
    steps = {"max_steps": max_steps} if max_steps else {}  # unset: the plan decides
    budget = EpisodeBudget(
        **steps,
        max_cost_usd=max_cost or None,
        max_teacher_calls=None if max_teacher_calls < 0 else max_teacher_calls,
        max_wall_s=max_wall or None,
    )
    spec = RunSpec(
        name=ladder, env=env, split=split, task_ids=[], ladder=ladder, rule=rule or None,
        temperature=temperature, repeats=cast("RepeatPolicy", repeats),
        backtrack=cast("BacktrackPolicy", backtrack), teacher=teacher,
        student=student or None, student_dtype=student_dtype or None, budget=budget,
        concurrency=concurrency, store_escalations=store_escalations, run_id=resume or None,
        demos_per=demos_per,
    )
    if via not in ("local", "celery"):
        raise ConfigError(f"--via must be 'local' or 'celery', not {via!r}")
    if via == "celery" and not settings.broker_url:
        raise ConfigError("--via celery needs a broker: set NIGHTOWL_BROKER_URL=redis://HOST:6379/0")
    if calibration:
        _apply_calibration(spec, calibration, rule_given=bool(rule))
    plan = spec.resolved(settings)  # once: before the environment starts or a run is recorded
    if task_ids and task_file:
        raise ConfigError("give --task-ids or --task-file, not both")
    if task_ids or task_file:
        named = task_ids.split(",") if task_ids else read_task_file(task_file)
        plan = plan.with_tasks(check_task_ids(env, named))
    else:
        plan = plan.with_tasks(select_tasks(env, split, tasks, game=game or None, offset=offset))
    if via == "celery":
        from nightowl.app.distributed import start_distributed_run
        from nightowl.workers.app import default_queue

        with Nightowl.open(settings) as app:
            _warn_calibration_dtype(app, plan)
            queue = default_queue()
            run_id = start_distributed_run(app, plan, queue)
            if as_json:
                typer.echo(json.dumps({"run_id": run_id, "enqueued": len(plan.task_ids)}))
            else:
                console.print(f"run {run_id}: {len(plan.task_ids)} episodes enqueued on "
                              f"'episodes'; follow it with `nightowl report {run_id}`")
            if watch:
                _watch(app, run_id, queue)
        return
    with Nightowl.open(settings) as app, rich_progress(
        _ui(as_json), episode_lines=True
    ) as sink:
        _warn_calibration_dtype(app, plan)
        summ = asyncio.run(run_tasks(app, plan, progress=sink))
    if as_json:
        typer.echo(summ.model_dump_json(indent=2))
    else:
        console.print(summary_table([summ], f"run {summ.run_id}"))
    exit_on_errors(sink.errors)


def _watch(app: Nightowl, run_id: str, queue: Any) -> None:
    """Follow a distributed run with a live bar; exit 1 on infrastructure failures."""
    from nightowl.app.leasing import check_leases, load_lease_settings, run_progress
    from nightowl.cli._inflight import inflight_table, success_text, watch_run

    lease = load_lease_settings()

    def poll() -> RunProgress:
        try:  # this process re-queues dead workers' episodes too
            check_leases(app.db, queue, lease, run_id=run_id)
        except Exception as exc:  # noqa: BLE001 - broker down: keep watching
            console.print(f"[yellow]lease check: {exc}[/]")
        return run_progress(app.db, run_id)

    snap = watch_run(console, poll, every_s=min(2.0, lease.check_every))
    rep = app.report(run_id)
    console.print(f"run {run_id}: {rep.progress}, success {success_text(rep)}")
    table = inflight_table(rep)
    if table is not None:
        console.print(fit(table))
    if snap.failed:
        console.print(f"[red]{snap.failed} episode(s) failed for infrastructure reasons[/]")
        raise typer.Exit(1)


def report(
    run_id: str = typer.Argument(..., help="run id (or a unique prefix)"),
    json_out: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Success, cost per episode, cost-of-pass and teacher call share of a run."""
    from nightowl.cli._inflight import inflight_table, success_text
    from nightowl.cli._tables import fmt_cost

    with opt.open_root() as app:
        rep = app.report(run_id)
    if json_out:
        console.print_json(rep.model_dump_json())
        return
    t = Table(title=f"run {rep.run_id}")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in (
        ("episodes", rep.progress),
        ("success rate", success_text(rep)),
        ("total cost", f"${rep.total_cost:.5f}"),
        ("cost per episode", f"${rep.cost_per_episode:.5f}"),
        ("cost-of-pass", fmt_cost(rep.cost_of_pass)),
        ("teacher share (teacher-acted steps)", f"{rep.teacher_share:.2f}"),
        ("teacher call share (of model calls)", f"{rep.teacher_call_share:.2f}"),
    ):
        t.add_row(k, v)
    if rep.errors:  # infrastructure errors: not losses, out of the rates above
        top = next(iter(rep.error_reasons), "")
        t.add_row("errors (not losses)", f"{rep.errors} ({top})")
    for role, st in rep.roles.items():
        t.add_row(f"{role} calls / cost", f"{st.calls} / ${st.cost_usd:.5f}")
    console.print(fit(t))
    flight = inflight_table(rep)
    if flight is not None:
        console.print(flight)


def calibrate(
    env: str = opt.ENV,
    target: float = typer.Option(
        0.8, min=0.0, max=1.0, help="target success rate on the dev split"
    ),
    tasks: int = typer.Option(6, min=1, max=10_000, help="dev tasks"),
    min_states: int = typer.Option(
        20, min=0, max=1_000_000,
        help="walk more dev tasks (up to --max-tasks) until this many states"
    ),
    max_tasks: int = typer.Option(
        24, min=1, max=10_000, help="most dev tasks --min-states may add"
    ),
    game: str = opt.GAME,
    temperatures: str = typer.Option("0.3,0.5,0.7"),
    verify: int = typer.Option(
        4, min=0, max=1_000,
        help="candidate rules played end to end on the dev tasks (0: predict only)"
    ),
    min_saving: float = typer.Option(
        1.2, min=1.0, max=1e6,
        help="a student rule must be this many times cheaper than teacher-only"
    ),
    confidence: float = typer.Option(
        0.8, min=0.0, max=0.99,
        help="...and cheap enough that its cost of pass beats teacher-only's even at this "
        "lower confidence bound of its dev success (0: the observed success)",
    ),
    max_steps: int | None = typer.Option(
        None, min=1, max=10_000, show_default=False,
        help=f"step budget of a dev rollout [default: the environment's, as runs get; "
        f"{DEFAULT_MAX_STEPS} for every built-in one (30 before)]",
    ),
    student_dtype: str = opt.STUDENT_DTYPE,
    out: str = typer.Option("", help="write the calibration JSON here"),
    all_rules: bool = typer.Option(False, help="list every candidate rule, not the frontier"),
    as_json: bool = JSON,
) -> None:
    """Choose the cascade's acceptance rule on the dev split: the cheapest that keeps success."""
    from nightowl.agent.presets import preset_for_rule
    from nightowl.app import CalibrateOptions, calibrate_rules
    from nightowl.cli._progress import rich_progress
    from nightowl.cli._tables import calibration_table

    opts = CalibrateOptions(
        env=env, game=game or None, tasks=tasks, target=target,
        temperatures=[float(x) for x in temperatures.split(",") if x.strip()],
        verify=verify, min_saving=min_saving, confidence=confidence,
        min_states=min_states, max_tasks=max_tasks,
        **({"rollout_max_steps": max_steps} if max_steps else {}),  # unset: the env's
    )
    with opt.open_root() as app, rich_progress(_ui(as_json)) as sink:
        rep = asyncio.run(calibrate_rules(app, opts, progress=sink,
                                          student_dtype=student_dtype or None))
    if as_json:
        typer.echo(rep.model_dump_json(indent=2))
        if out:
            Path(out).write_text(rep.model_dump_json(indent=2))
        exit_on_errors(sink.errors)
        return
    console.print(calibration_table(rep, all_rules=all_rules))
    best = rep.chosen
    console.print(rep.verdict)
    if rep.student_pays:
        console.print(f"use --ladder {preset_for_rule(best['spec'])} --rule {best['spec']} "
                      f"--temperature {best['temperature']:g} "
                      f"--repeats {best.get('repeats') or 'explore'}")
    if out:
        Path(out).write_text(rep.model_dump_json(indent=1))
        console.print(f"written: {out}")
    exit_on_errors(sink.errors)

