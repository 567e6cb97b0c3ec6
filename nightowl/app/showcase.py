"""Use case: the showcase (`nightowl demo`) -- collect oracle demos, compare ladders.

1. Collection: the oracle teacher plays ``train_tasks`` training tasks; its successful
   episodes become demos (embedded into the demo memory). Billed to the ledger as a
   teacher LLM would have been (prompt counted by the student's real tokenizer plus a
   fixed output length, at the teacher's prices).
2. Evaluation on ``test_tasks`` held-out test tasks, one ledger run per configuration:
   teacher-only, student-only, student + retrieved demos, student + demos + cascade
   (self-consistency votes), student + demos + logprob-margin cascade.
3. A report (success, cost per episode, cost-of-pass, teacher share, student samples
   per step, wall time), the break-even episode count n* of the collection cost, a JSON
   file and a PNG of cost vs success. The CLI renders the table.

The showcase uses its own SQLite database under ``<home>/demo/`` (wiped at the start
unless ``fresh=False``) so earlier runs never leak demos into it.

Every configuration is resolved into its run plan (`nightowl.app.plan`) before anything
starts: bad input fails first, and each arm runs the plan it was checked as. The test
episodes are short on purpose (`DEMO_MAX_STEPS`); the collection gets the environment's
default step budget, as `nightowl collect` does.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from nightowl.agent.budget import DEMO_MAX_STEPS, EpisodeBudget
from nightowl.app.collect import CollectRequest, collect_demos
from nightowl.app.events import Message, ProgressSink, ignore
from nightowl.app.plan import RunPlan, RunSpec, resolve_student
from nightowl.app.root import Nightowl
from nightowl.app.runs import RunSummary, run_tasks
from nightowl.config import Settings
from nightowl.envs.registry import select_tasks

CONFIG_LABELS: dict[str, str] = {
    "teacher": "teacher only",
    "student": "student only",
    "student+demos": "student + demos",
    "cascade": "student + demos + cascade",
    "margin": "student + demos + margin cascade",
}


class ShowcaseOptions(BaseModel):
    """Knobs of `nightowl demo`.

    Defaults: twx/peckingorder, a family where the embedded student pays (README
    "Measured", `bench/icd_e2e.py`), sized to finish in minutes on 2 cores.
    """

    env: str = "twx"
    game: str | None = "peckingorder"
    train_tasks: int = Field(12, ge=1)
    test_tasks: int = Field(4, ge=1)
    max_steps: int = Field(
        DEMO_MAX_STEPS, ge=1, description="step budget per test episode (short on purpose)"
    )
    student_dtype: str | None = Field(
        None, description="dtype for an in-process student (None: the registry's, "
        "which picks one per machine)"
    )
    collect_max_steps: int | None = Field(
        None, ge=1, description="step budget per collection episode (None: the "
        "environment's default, as `nightowl collect`)",
    )
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
    k_episodes: int | None = None  # None: the prompt builder's
    window: int | None = None
    demos_per: str = "step"


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


def prices_line(settings: Settings, student: str) -> str:
    """The prices every report prints."""
    sp = settings.model(student).prices
    tp = settings.model(settings.teacher_price_model).prices
    return (
        f"prices (USD per 1M tokens): student {student} "
        f"in {sp.input:g} / cached {sp.cached_input:g} / out {sp.output:g}; "
        f"teacher ({settings.teacher_price_model}) in {tp.input:g} / cached "
        f"{tp.cached_input:g} / out {tp.output:g}; oracle teacher billed as its prompt "
        f"(student tokenizer) + {settings.oracle_output_tokens} output tokens per step"
    )


class ShowcaseReport(BaseModel):
    """Everything the showcase measured (also written as JSON)."""

    env: str
    game: str | None
    options: ShowcaseOptions
    prices: str
    student_dtype: str | None = Field(None, description="the in-process student's dtype and why")
    train_tasks: list[str]
    test_tasks: list[str]
    collection: RunSummary
    demos: int
    configs: list[RunSummary]
    break_even_episodes: dict[str, float | None]
    #: per student arm: does it pay against teacher-only on these test tasks, and by how much
    verdicts: dict[str, str] = Field(default_factory=dict)
    wall_s: float
    database: str
    title: str
    report_path: str
    plot_path: str


def arm_verdict(teacher: RunSummary, arm: RunSummary, *, goal: float = 3.0) -> str:
    """Whether an arm pays against teacher-only on the same tasks, in one line.

    An arm may pay when its successes are within one episode of teacher-only's; the
    verdict says in words which case it is ("equal success", "one episode short",
    "more success") and always shows both counts ("3/4 vs 4/4"). "Pays" means a lower
    cost per episode, and the ratio says whether it reaches ``goal`` x.
    """
    label = CONFIG_LABELS.get(arm.name, arm.name)
    ratio = teacher.cost_per_episode / arm.cost_per_episode if arm.cost_per_episode else math.inf
    won = f"{arm.successes}/{arm.episodes} vs {teacher.successes}/{teacher.episodes}"
    if arm.successes < teacher.successes - 1:
        return f"{label}: does not pay here: success {won} (more than one episode short)"
    if ratio <= 1.0:
        return f"{label}: does not pay here: {1 / ratio:.2f}x the teacher-only cost ({won})"
    reach = "reaches" if ratio >= goal else "below"
    if arm.successes == teacher.successes:
        level = f"equal success ({won})"
    elif arm.successes < teacher.successes:
        level = f"success one episode short of teacher-only ({won})"
    else:
        level = f"more success than teacher-only ({won})"
    return f"{label}: pays {ratio:.2f}x at {level}; {reach} the {goal:g}x goal"


def arm_plans(settings: Settings, opts: ShowcaseOptions) -> list[RunPlan]:
    """One plan per configuration (test tasks not chosen yet); raises on bad input."""
    return [
        RunSpec(
            name=cfg, env=opts.env, split="test", task_ids=[], ladder=cfg,
            rule=f"margin:{opts.margin:g}" if cfg == "margin" else opts.rule,
            temperature=opts.temperature, budget=EpisodeBudget(max_steps=opts.max_steps),
            concurrency=opts.concurrency, kind="eval", student=opts.student,
            student_dtype=opts.student_dtype, k_episodes=opts.k_episodes, window=opts.window,
            demos_per=opts.demos_per,
        ).resolved(settings)
        for cfg in opts.configs
    ]


async def run_showcase(
    settings: Settings,
    opts: ShowcaseOptions,
    *,
    progress: ProgressSink | None = None,
    embedder: Any = None,
) -> ShowcaseReport:
    """Run the whole showcase; returns the report (also written to disk with a plot)."""
    from nightowl.ledger import break_even_episodes

    sink = progress or ignore
    plans = arm_plans(settings, opts)  # bad input fails before anything starts or is recorded
    choice = plans[0].student if plans else resolve_student(  # no arms: collection only
        settings, opts.student, opts.student_dtype)
    student = choice.name
    t_start = time.perf_counter()
    demo_home = settings.home / "demo"
    if opts.fresh and demo_home.exists():
        shutil.rmtree(demo_home)
    demo_home.mkdir(parents=True, exist_ok=True)
    # the showcase's own database; the student's registry entry carries the plan's dtype,
    # so the root's backend of the student is the one the arms run (and cold_start clears)
    dsettings = choice.settings(settings).model_copy(
        update={"home": demo_home, "database_url": None})
    spec = dsettings.model(student)
    dtype = None  # the in-process student's dtype line
    if spec.backend == "transformers":
        from nightowl.llm.dtype import resolve_dtype

        requested = spec.params.get("dtype")
        resolved, why = resolve_dtype(str(requested) if requested else None)
        dtype = f"{resolved} ({why})"
    sink(Message(text=f"nightowl demo on {opts.env}/{opts.game or '*'}: {opts.train_tasks} "
                      f"train tasks (oracle demos), {opts.test_tasks} test tasks"))
    sink(Message(text=prices_line(settings, student)))
    if dtype:
        sink(Message(text=f"student {student} runs in-process "
                          f"with dtype {dtype}"))
    train_ids = select_tasks(opts.env, "train", opts.train_tasks, game=opts.game)
    test_ids = select_tasks(opts.env, "test", opts.test_tasks, game=opts.game)
    rows: list[RunSummary] = []
    with Nightowl.open(dsettings, embedder=embedder) as app:
        collected = await collect_demos(
            app,
            CollectRequest(env=opts.env, max_steps=opts.collect_max_steps,
                           student_dtype=choice.dtype,
                           concurrency=opts.concurrency, tasks=len(train_ids),
                           name="collect demos (oracle, train)", existing="replace"),
            task_ids=train_ids,
            progress=sink,
        )
        collect = collected.summary
        assert collect is not None  # existing="replace" always runs the tasks
        n_demos = collected.demos_added
        sink(Message(text=f"  collection: {collect.successes}/{collect.episodes} won, "
                          f"{n_demos} demos, ${collect.total_cost:.5f}, {collect.wall_s:.0f} s"))
        for plan in plans:
            cfg = plan.name
            if cfg != "teacher":
                app.cold_start(student)  # each arm pays for its own prompts
            summ = await run_tasks(app, plan.with_tasks(test_ids), progress=sink)
            rows.append(summ)
            sink(Message(text=f"  {CONFIG_LABELS.get(cfg, cfg)}: {summ.successes}/"
                              f"{summ.episodes} won, ${summ.cost_per_episode:.5f}/episode, "
                              f"{summ.wall_s:.0f} s"))
    title = (f"{opts.env}/{opts.game or '*'}: {len(test_ids)} held-out test tasks, "
             f"max {opts.max_steps} steps; {n_demos} oracle demos")
    teacher = {r.name: r for r in rows}.get("teacher")
    break_even: dict[str, float | None] = {}
    verdicts: dict[str, str] = {}
    for r in rows:
        if teacher is not None and r.name != "teacher":
            n = break_even_episodes(
                collect.total_cost, teacher.cost_per_episode, r.cost_per_episode
            )
            break_even[r.name] = None if math.isinf(n) else n
            verdicts[r.name] = arm_verdict(teacher, r)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = opts.out or settings.home / "reports" / f"demo-{stamp}.json"
    plot = opts.plot or out.with_suffix(".png")
    report = ShowcaseReport(
        env=opts.env,
        game=opts.game,
        options=opts,
        prices=prices_line(settings, student),
        student_dtype=dtype,
        train_tasks=train_ids,
        test_tasks=test_ids,
        collection=collect,
        demos=n_demos,
        configs=rows,
        break_even_episodes=break_even,
        verdicts=verdicts,
        wall_s=time.perf_counter() - t_start,
        database=str(demo_home / "nightowl.db"),
        title=title,
        report_path=str(out),
        plot_path=str(plot),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report.model_dump_json(indent=1))
    plot_cost_vs_success(rows, plot, title)
    return report
