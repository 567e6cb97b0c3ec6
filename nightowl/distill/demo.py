"""`nightowl demo`: collect oracle demos, then compare ladders on held-out test tasks.

1. Collection: the oracle teacher plays ``train_tasks`` training tasks; its successful
   episodes become demos (embedded into the demo memory). Billed to the ledger as a
   teacher LLM would have been (prompt counted by the student's real tokenizer plus a
   fixed output length, at the teacher's prices).
2. Evaluation on ``test_tasks`` held-out test tasks, one ledger run per configuration:
   teacher-only, student-only, student + retrieved demos, student + demos + cascade
   (self-consistency votes), student + demos + logprob-margin cascade.
3. A table (success, cost per episode, cost-of-pass, teacher-call fraction, student
   samples per step, wall time), the break-even episode count n* of the collection cost,
   a JSON report and a PNG of cost vs success.

The demo uses its own SQLite database under ``<home>/demo/`` (wiped at the start of
each demo unless ``fresh=False``) so earlier runs never leak demos into it.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from nightowl.agent.budget import EpisodeBudget
from nightowl.agent.runner import RunSpec, RunSummary, Workbench, add_demos, run_tasks, select_tasks
from nightowl.config import Settings

CONFIG_LABELS: dict[str, str] = {
    "teacher": "teacher only",
    "student": "student only",
    "student+demos": "student + demos",
    "cascade": "student + demos + cascade",
    "margin": "student + demos + margin cascade",
}


class DemoOptions(BaseModel):
    """Knobs of `nightowl demo` (defaults sized to finish in minutes on 2 cores)."""

    env: str = "tw"
    game: str | None = "coin_collector"
    train_tasks: int = Field(12, ge=1)
    test_tasks: int = Field(6, ge=1)
    max_steps: int = Field(10, ge=1)
    student_dtype: str | None = Field(
        "bfloat16", description="dtype for an in-process student (prefill ~1.6-2x faster)"
    )
    collect_max_steps: int = Field(40, ge=1)
    configs: list[str] = Field(
        default_factory=lambda: ["teacher", "student", "student+demos", "cascade", "margin"]
    )
    rule: str = "unanimity:3"
    temperature: float = 0.5
    margin: float = 1.0
    concurrency: int = Field(4, ge=1)
    student: str | None = None
    out: Path | None = None
    plot: Path | None = None
    fresh: bool = True
    k_episodes: int = 2
    window: int = 3


def _fmt_cost(x: float) -> str:
    return "inf" if math.isinf(x) else f"${x:.5f}"


def summary_table(rows: Sequence[RunSummary], title: str) -> Table:
    """The comparison table."""
    t = Table(title=title)
    for col in (
        "configuration",
        "success",
        "cost/episode",
        "cost-of-pass",
        "teacher-call frac",
        "student samples/step",
        "steps/ep",
        "wall s",
    ):
        t.add_column(col, justify="left" if col == "configuration" else "right")
    for r in rows:
        t.add_row(
            CONFIG_LABELS.get(r.name, r.name),
            f"{r.successes}/{r.episodes} ({r.success_rate:.0%})",
            _fmt_cost(r.cost_per_episode),
            _fmt_cost(r.cost_of_pass),
            f"{r.teacher_call_fraction:.2f}",
            f"{r.student_samples_per_step:.2f}",
            f"{r.steps_per_episode:.1f}",
            f"{r.wall_s:.1f}",
        )
    return t


def plot_cost_vs_success(rows: Sequence[RunSummary], path: Path, title: str) -> Path:
    """A PNG of cost per episode (x, log) vs success rate (y)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    fig, ax = plt.subplots(figsize=(7.2, 4.4), dpi=120)
    markers = "osD^vP*X"
    for i, r in enumerate(rows):
        x = max(r.cost_per_episode, 1e-7)
        # A legend rather than labels at the points: configurations often sit on top of
        # each other (e.g. teacher-only and a cascade at 100%).
        ax.scatter([x], [r.success_rate], s=70, marker=markers[i % len(markers)],
                   label=f"{CONFIG_LABELS.get(r.name, r.name)} (${x:.5f})", alpha=0.85)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"${v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("cost per episode (USD, log scale)")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def prices_line(settings: Settings, student: str | None) -> str:
    """The prices every report prints."""
    sp = settings.model(student or settings.student_model).prices
    tp = settings.model(settings.teacher_price_model).prices
    return (
        f"prices (USD per 1M tokens): student {student or settings.student_model} "
        f"in {sp.input:g} / cached {sp.cached_input:g} / out {sp.output:g}; "
        f"teacher ({settings.teacher_price_model}) in {tp.input:g} / cached "
        f"{tp.cached_input:g} / out {tp.output:g}; oracle teacher billed as its prompt "
        f"(student tokenizer) + {settings.oracle_output_tokens} output tokens per step"
    )


async def run_demo(
    settings: Settings,
    opts: DemoOptions,
    console: Console | None = None,
    *,
    embedder: Any = None,
) -> dict[str, Any]:
    """Run the whole demo; returns the JSON-able report (also written to disk)."""
    from nightowl.ledger import break_even_episodes

    console = console or Console()
    t_start = time.perf_counter()
    demo_home = settings.home / "demo"
    if opts.fresh and demo_home.exists():
        shutil.rmtree(demo_home)
    demo_home.mkdir(parents=True, exist_ok=True)
    update: dict[str, Any] = {"home": demo_home, "database_url": None}
    sname = opts.student or settings.student_model
    spec = settings.model(sname)
    if opts.student_dtype and spec.backend == "transformers":
        models = dict(settings.models)
        models[sname] = spec.model_copy(
            update={"params": {**spec.params, "dtype": opts.student_dtype}}
        )
        update["models"] = models
    dsettings = settings.model_copy(update=update)
    wb = Workbench.open(dsettings, embedder=embedder)
    console.print(f"[bold]nightowl demo[/] on {opts.env}/{opts.game or '*'}: "
                  f"{opts.train_tasks} train tasks (oracle demos), {opts.test_tasks} test tasks")
    console.print(prices_line(settings, opts.student))
    if "models" in update:
        console.print(f"student {sname} runs in-process with dtype {opts.student_dtype}")
    train_ids = select_tasks(opts.env, "train", opts.train_tasks, game=opts.game)
    test_ids = select_tasks(opts.env, "test", opts.test_tasks, game=opts.game)
    rows: list[RunSummary] = []
    columns = (
        TextColumn("{task.description:<34}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[extra]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        # 1. collection
        pid = progress.add_task("collect demos (oracle, train)", total=len(train_ids), extra="")
        wins = [0]

        def done_c(res: Any) -> None:
            wins[0] += int(res.success)
            progress.update(pid, advance=1, extra=f"won {wins[0]}")

        collect = await run_tasks(
            wb,
            RunSpec(
                name="collect", env=opts.env, split="train", task_ids=train_ids,
                ladder="teacher", budget=EpisodeBudget(max_steps=opts.collect_max_steps),
                retrieve=False, concurrency=opts.concurrency, kind="collect",
                student=opts.student,
            ),
            on_done=done_c,
        )
        progress.update(pid, extra=f"won {collect.successes}; embedding demos")
        n_demos = add_demos(wb, collect)
        progress.console.print(
            f"  collection: {collect.successes}/{collect.episodes} won, {n_demos} demos, "
            f"${collect.total_cost:.5f}, {collect.wall_s:.0f} s"
        )
        progress.update(pid, extra=f"{n_demos} demos stored")

        # 2. evaluation
        for cfg in opts.configs:
            pid = progress.add_task(CONFIG_LABELS.get(cfg, cfg), total=len(test_ids), extra="")
            box = {"won": 0}

            def done_e(res: Any, pid: Any = pid, box: dict[str, int] = box) -> None:
                box["won"] += int(res.success)
                progress.update(pid, advance=1, extra=f"won {box['won']}")

            rule = f"margin:{opts.margin:g}" if cfg == "margin" else opts.rule
            summ = await run_tasks(
                wb,
                RunSpec(
                    name=cfg, env=opts.env, split="test", task_ids=test_ids, ladder=cfg,
                    rule=rule, temperature=opts.temperature,
                    budget=EpisodeBudget(max_steps=opts.max_steps),
                    concurrency=opts.concurrency, kind="eval", student=opts.student,
                    k_episodes=opts.k_episodes, window=opts.window,
                ),
                on_done=done_e,
            )
            rows.append(summ)
            progress.console.print(
                f"  {CONFIG_LABELS.get(cfg, cfg)}: {summ.successes}/{summ.episodes} won, "
                f"${summ.cost_per_episode:.5f}/episode, {summ.wall_s:.0f} s"
            )
    wb.close()
    title = (f"{opts.env}/{opts.game or '*'}: {len(test_ids)} held-out test tasks, "
             f"max {opts.max_steps} steps; {n_demos} oracle demos")
    console.print(summary_table(rows, title))
    by = {r.name: r for r in rows}
    break_even: dict[str, float] = {}
    teacher = by.get("teacher")
    for r in rows:
        if teacher is not None and r.name not in ("teacher",):
            break_even[r.name] = break_even_episodes(
                collect.total_cost, teacher.cost_per_episode, r.cost_per_episode
            )
    console.print(f"demo collection cost: ${collect.total_cost:.5f} for {len(train_ids)} "
                  f"episodes ({collect.successes} successful -> {n_demos} demos)")
    for name, n in break_even.items():
        if name in ("cascade", "margin"):
            shown = "never (not cheaper per episode)" if math.isinf(n) else f"{n:.1f} episodes"
            console.print(f"break-even n* for {CONFIG_LABELS[name]}: {shown}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = opts.out or settings.home / "reports" / f"demo-{stamp}.json"
    plot = opts.plot or out.with_suffix(".png")
    report: dict[str, Any] = {
        "env": opts.env,
        "game": opts.game,
        "options": json.loads(opts.model_dump_json()),
        "prices": prices_line(settings, opts.student),
        "train_tasks": train_ids,
        "test_tasks": test_ids,
        "collection": json.loads(collect.model_dump_json()),
        "demos": n_demos,
        "configs": [json.loads(r.model_dump_json()) for r in rows],
        "break_even_episodes": {k: (None if math.isinf(v) else v) for k, v in break_even.items()},
        "wall_s": time.perf_counter() - t_start,
        "database": str(demo_home / "nightowl.db"),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str))
    plot_cost_vs_success(rows, plot, title)
    console.print(f"report: {out}\nplot:   {plot}\ntotal wall time: {report['wall_s']:.0f} s")
    return report
