"""Use case: run one ladder over a list of tasks as one ledger run.

`run_tasks` takes a `RunPlan` (or a `RunSpec`, which it resolves first: the plan is
decided once, in `nightowl.app.plan`, before anything starts or is recorded), opens a
ledger run (or resumes one), builds the ladder from the plan, runs the episodes
concurrently in the LangGraph agent loop with checkpoints (an interrupted run resumes
without re-billing finished steps), and returns a `RunSummary`. Progress goes to a
`ProgressSink`.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from nightowl import telemetry as tm
from nightowl.agent.graph import AgentGraph, EpisodeResult, LoopConfig
from nightowl.agent.presets import ladder_from
from nightowl.app.events import EpisodeDone, PhaseStarted, ProgressSink, ignore
from nightowl.app.plan import RunPlan, RunSpec, as_plan, student_prompt
from nightowl.checkpoints import open_checkpointer
from nightowl.envs.registry import make_env
from nightowl.errors import NightowlError
from nightowl.llm.machine import scoring_machine

if TYPE_CHECKING:
    from nightowl.app.root import Nightowl


class RunSummary(BaseModel):
    """One configuration's results over a task set (one ledger run).

    ``episodes`` counts the episodes that played out (won or lost); ``errors`` those
    that ended on an infrastructure error (environment or model backend), which are
    kept out of every rate and per-episode cost (``total_cost`` includes them).

    ``teacher_share`` is the share of environment steps whose action the teacher chose
    (docs/agent.md); ``teacher_call_share`` is the ledger's teacher generate calls over
    all generate calls (a cost-side view of the same thing).
    """

    model_config = ConfigDict(ser_json_inf_nan="constants")  # cost_of_pass may be inf

    name: str
    run_id: str
    ladder: str
    episodes: int
    successes: int
    success_rate: float
    total_cost: float
    cost_per_episode: float
    cost_of_pass: float
    teacher_share: float
    teacher_call_share: float
    student_samples_per_step: float
    steps_per_episode: float
    wall_s: float
    overhead_ms_per_step: float
    reasons: dict[str, int]
    #: episodes that ended on an infrastructure error (not counted in ``episodes``)
    errors: int = 0
    error_reasons: dict[str, int] = {}
    config: dict[str, Any]
    episodes_detail: list[dict[str, Any]] = []


def run_config(app: Nightowl, plan: RunPlan) -> dict[str, Any]:
    """What the ledger records about a run's configuration."""
    return {
        "env": plan.env,
        "split": plan.split,
        "tasks": list(plan.task_ids),
        "ladder": plan.ladder,
        "rule": plan.rule_given,
        "temperature": plan.temperature,
        "repeats": plan.repeats,
        "backtrack": plan.backtrack,
        "teacher": plan.teacher,
        "student": plan.student.name,
        "student_dtype": plan.student.dtype,
        "budget": plan.budget.model_dump(),
        "retrieve": plan.retrieve,
        "concurrency": plan.concurrency,
        "demos_per": plan.demos_per,
        "scoring": _scoring(app, plan),
        "calibrated_on": plan.calibrated_on.model_dump() if plan.calibrated_on else None,
    }


def _scoring(app: Nightowl, plan: RunPlan) -> dict[str, Any] | None:
    """The student's scoring machine (None where the student cannot even be built)."""
    try:
        return scoring_machine(plan.student.backend(app)).model_dump()
    except NightowlError:
        return None


async def run_tasks(
    app: Nightowl,
    spec: RunPlan | RunSpec,
    *,
    progress: ProgressSink | None = None,
) -> RunSummary:
    """Run a plan (a spec is resolved first) as one ledger run (resuming ``run_id``)."""
    t0 = time.perf_counter()
    plan = as_plan(app.settings, spec)
    run_id, results, config = await run_episodes(app, plan, progress=progress)
    wall = time.perf_counter() - t0
    return summarize(plan.name, plan.ladder, run_id, results, app.ledger, wall, config)


async def run_episodes(
    app: Nightowl,
    spec: RunPlan | RunSpec,
    *,
    progress: ProgressSink | None = None,
    ledger: Any = None,
) -> tuple[str, list[EpisodeResult], dict[str, Any]]:
    """`run_tasks` without the run-wide summary: (run id, episode results, run config).

    A queued episode of a distributed run calls this: summarising the whole run (a
    ledger report over every episode so far) after each of its episodes is wasted work.
    ``ledger`` replaces ``app.ledger`` for the episodes' writes (a lease-fenced ledger).
    """
    plan = as_plan(app.settings, spec)
    episode_ledger = ledger if ledger is not None else app.ledger
    sink = progress or ignore
    config = run_config(app, plan)
    builder = student_prompt(plan.env, k_episodes=plan.k_episodes, window=plan.window)
    config["prompt"] = builder.describe()  # what the student saw, recorded with the run
    if plan.run_id and app.ledger.run_exists(plan.run_id):
        run_id = plan.run_id
    else:
        run_id = app.ledger.start_run(plan.name, plan.kind, config, run_id=plan.run_id)
    ladder = ladder_from(
        plan.ladder_choice,
        settings=app.settings,
        ledger=episode_ledger,
        student_backend=plan.student.backends(app),
        run_id=run_id,
        temperature=plan.temperature,
        repeats=plan.repeats,
        backtrack=plan.backtrack,
        builder=builder,
    )
    config["tiers"] = ladder.describe()
    uses_demos = plan.uses_demos
    memory = app.memory if (uses_demos or plan.store_escalations) else None
    loop = LoopConfig(
        budget=plan.budget,
        retrieve=uses_demos,
        k_episodes=builder.k_episodes,
        window=builder.window,
        demos_per=plan.demos_per,
        store_escalations=plan.store_escalations,
    )
    sink(PhaseStarted(key=plan.name, label=plan.name, total=len(plan.task_ids)))
    wins = 0

    def done(res: EpisodeResult) -> None:
        nonlocal wins
        wins += int(res.success)
        sink(EpisodeDone(key=plan.name, task_id=res.task_id, success=res.success,
                         steps=res.steps, reason=res.reason, wins=wins, error=res.error))

    async with open_checkpointer(app.settings) as saver:
        graph = AgentGraph(
            ladder=ladder,
            env_factory=lambda: make_env(plan.env, **plan.env_kwargs),
            ledger=episode_ledger,
            memory=memory,
            config=loop,
            checkpointer=saver,
            env_name=plan.env,
        )
        try:
            with tm.span("nightowl.run", {
                tm.RUN_ID: run_id, "nightowl.run.name": plan.name, tm.ENV: plan.env,
                "nightowl.ladder": plan.ladder, "nightowl.split": plan.split,
                "nightowl.tasks": len(plan.task_ids), "nightowl.concurrency": plan.concurrency,
            }) as sp:
                results = await graph.run_many(
                    run_id=run_id,
                    task_ids=plan.task_ids,
                    split=plan.split,
                    concurrency=plan.concurrency,
                    on_done=done,
                )
                tm.set_attributes(sp, {
                    "nightowl.episodes": len(results), "nightowl.successes": wins,
                    "nightowl.errors": sum(bool(r.error) for r in results),
                    tm.COST_USD: float(sum(r.stats.get("cost_usd", 0.0) for r in results)),
                })
        finally:
            graph.close()
    if graph.fatal is not None:  # a dead model backend: what finished is recorded; stop
        raise graph.fatal
    return run_id, results, config


def summarize(
    name: str,
    ladder_preset: str,
    run_id: str,
    results: Sequence[EpisodeResult],
    ledger: Any,
    wall_s: float,
    config: dict[str, Any],
) -> RunSummary:
    """Aggregate episode results and the ledger's report into a `RunSummary`."""
    rep = ledger.run_report(run_id)
    # infrastructure errors (environment, model backend) are not the agent's outcome:
    # they stay out of success rate, cost per episode and cost-of-pass (docs/agent.md)
    played = [r for r in results if not r.error]
    errors = Counter(r.error[:120] for r in results if r.error)
    n = len(played)
    succ = sum(r.success for r in played)
    steps = sum(r.steps for r in played)
    samples = sum(r.stats.get("student_samples", 0.0) for r in played)
    overhead = sum(r.stats.get("node_s", 0.0) + r.stats.get("retrieve_s", 0.0) for r in played)
    rate = succ / n if n else 0.0
    cpe = (rep.total_cost - rep.error_cost) / n if n else 0.0
    reasons = Counter(r.reason.split(" (")[0][:60] for r in played)
    return RunSummary(
        name=name,
        run_id=run_id,
        ladder=ladder_preset,
        episodes=n,
        successes=succ,
        success_rate=rate,
        total_cost=rep.total_cost,
        cost_per_episode=cpe,
        cost_of_pass=cpe / rate if rate > 0 else math.inf,
        teacher_share=rep.teacher_share,
        teacher_call_share=rep.teacher_call_share,
        student_samples_per_step=samples / steps if steps else 0.0,
        steps_per_episode=steps / n if n else 0.0,
        wall_s=wall_s,
        overhead_ms_per_step=1000 * overhead / steps if steps else 0.0,
        reasons=dict(reasons),
        errors=errors.total(),
        error_reasons=dict(errors),
        config=config,
        episodes_detail=[
            {
                "task_id": r.task_id,
                "episode_id": r.episode_id,
                "success": r.success,
                "steps": r.steps,
                "reason": r.reason,
                "error": r.error,
                "teacher_calls": r.stats.get("teacher_calls", 0.0),
                "student_samples": r.stats.get("student_samples", 0.0),
                "cost_usd": r.stats.get("cost_usd", 0.0),
            }
            for r in results
        ],
    )

