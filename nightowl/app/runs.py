"""Use case: run one ladder over a list of tasks as one ledger run.

`run_tasks` validates the spec before anything starts or is recorded (ladder preset,
acceptance rule, model names, environment), opens a ledger run (or resumes one),
builds the ladder, runs the episodes concurrently in the LangGraph agent loop with
checkpoints (an interrupted run resumes without re-billing finished steps), and
returns a `RunSummary`. Progress goes to a `ProgressSink`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from nightowl.agent.budget import EpisodeBudget
from nightowl.agent.graph import AgentGraph, EpisodeResult, LoopConfig
from nightowl.agent.presets import DEMO_PRESETS, LADDER_PRESETS, build_ladder, validate_ladder
from nightowl.agent.tiers import BacktrackPolicy, RepeatPolicy, check_policies
from nightowl.app.events import EpisodeDone, PhaseStarted, ProgressSink, ignore
from nightowl.checkpoints import open_checkpointer
from nightowl.config import Settings
from nightowl.distill.prompt import PromptBuilder
from nightowl.envs.registry import env_class
from nightowl.errors import ConfigError, NightowlError
from nightowl.llm.machine import ScoringMachine, scoring_machine

if TYPE_CHECKING:
    from nightowl.app.root import Nightowl


@dataclass(kw_only=True)
class RunSpec:
    """What to run: one ladder over a task list.

    ``student=None`` means the settings' student (resolved once, by the root).
    """

    name: str
    env: str
    split: str
    task_ids: list[str]
    ladder: str = "cascade"
    rule: str | None = None
    temperature: float = 0.5
    #: a student's repeated action in the same state: "explore" or "escalate" (StudentTier)
    repeats: RepeatPolicy = "explore"
    #: the move back through the exit just used: "avoid" or "allow" (StudentTier)
    backtrack: BacktrackPolicy = "avoid"
    teacher: str = "oracle"
    student: str | None = None
    budget: EpisodeBudget = field(default_factory=EpisodeBudget)
    retrieve: bool = True
    concurrency: int = 4
    store_escalations: bool = False
    k_episodes: int | None = None  # None: the prompt builder's (chosen by bench/icd_matrix.py)
    window: int | None = None
    demos_per: str = "step"  # or "episode": retrieve once, the prompt prefix stays cached
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    kind: str = "run"
    #: the machine a calibrated rule's scores came from (`nightowl run --calibration`)
    calibrated_on: ScoringMachine | None = None


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


def validate_spec(settings: Settings, spec: RunSpec) -> None:
    """Reject a bad spec before anything starts or is recorded.

    Raises:
        UnknownNameError: unknown environment, ladder preset or model.
        ConfigError: a rule that does not parse or does not fit the preset.
    """
    env_class(spec.env)  # unknown env / missing extra: a clear error now
    if spec.demos_per not in ("step", "episode"):
        raise ConfigError(f"demos_per must be 'step' or 'episode', not {spec.demos_per!r}")
    try:
        check_policies(spec.repeats, spec.backtrack)  # the student tier's own check
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    validate_ladder(spec.ladder, spec.rule, spec.student, spec.teacher, settings)


def run_config(app: Nightowl, spec: RunSpec) -> dict[str, Any]:
    """What the ledger records about a run's configuration."""
    return {
        "env": spec.env,
        "split": spec.split,
        "tasks": spec.task_ids,
        "ladder": spec.ladder,
        "rule": spec.rule,
        "temperature": spec.temperature,
        "repeats": spec.repeats,
        "backtrack": spec.backtrack,
        "teacher": spec.teacher,
        "student": spec.student or app.student,
        "budget": spec.budget.model_dump(),
        "retrieve": spec.retrieve,
        "concurrency": spec.concurrency,
        "demos_per": spec.demos_per,
        "scoring": _scoring(app, spec),
        "calibrated_on": spec.calibrated_on.model_dump() if spec.calibrated_on else None,
    }


def _scoring(app: Nightowl, spec: RunSpec) -> dict[str, Any] | None:
    """The student's scoring machine (None where the student cannot even be built)."""
    try:
        return scoring_machine(app.student_backend(spec.student)).model_dump()
    except NightowlError:
        return None


async def run_tasks(
    app: Nightowl,
    spec: RunSpec,
    *,
    progress: ProgressSink | None = None,
    checkpoint_db: Path | None = None,
) -> RunSummary:
    """Run ``spec`` as one ledger run (resuming it when ``spec.run_id`` exists)."""
    t0 = time.perf_counter()
    run_id, results, config = await run_episodes(
        app, spec, progress=progress, checkpoint_db=checkpoint_db
    )
    wall = time.perf_counter() - t0
    return summarize(spec.name, spec.ladder, run_id, results, app.ledger, wall, config)


async def run_episodes(
    app: Nightowl,
    spec: RunSpec,
    *,
    progress: ProgressSink | None = None,
    checkpoint_db: Path | None = None,
    ledger: Any = None,
) -> tuple[str, list[EpisodeResult], dict[str, Any]]:
    """`run_tasks` without the run-wide summary: (run id, episode results, run config).

    A queued episode of a distributed run calls this: summarising the whole run (a
    ledger report over every episode so far) after each of its episodes is wasted work.
    ``ledger`` replaces ``app.ledger`` for the episodes' writes (a lease-fenced ledger).
    """
    validate_spec(app.settings, spec)
    episode_ledger = ledger if ledger is not None else app.ledger
    sink = progress or ignore
    student = spec.student or app.student
    config = run_config(app, spec)
    builder = PromptBuilder()
    builder = builder.with_options(
        k_episodes=spec.k_episodes or builder.k_episodes, window=spec.window or builder.window
    )
    config["prompt"] = builder.describe()  # what the student saw, recorded with the run
    if spec.run_id and app.ledger.run_exists(spec.run_id):
        run_id = spec.run_id
    else:
        run_id = app.ledger.start_run(spec.name, spec.kind, config, run_id=spec.run_id)
    ladder = build_ladder(
        spec.ladder,
        settings=app.settings,
        ledger=episode_ledger,
        student_backend=app.backend,
        run_id=run_id,
        student=student,
        teacher=spec.teacher,
        rule=spec.rule,
        temperature=spec.temperature,
        repeats=spec.repeats,
        backtrack=spec.backtrack,
        builder=builder,
    )
    config["tiers"] = ladder.describe()
    uses_demos = spec.ladder in DEMO_PRESETS and spec.retrieve
    memory = app.memory if (uses_demos or spec.store_escalations) else None
    loop = LoopConfig(
        budget=spec.budget,
        retrieve=uses_demos,
        k_episodes=builder.k_episodes,
        window=builder.window,
        demos_per=spec.demos_per,
        store_escalations=spec.store_escalations,
    )
    sink(PhaseStarted(key=spec.name, label=spec.name, total=len(spec.task_ids)))
    wins = 0

    def done(res: EpisodeResult) -> None:
        nonlocal wins
        wins += int(res.success)
        sink(EpisodeDone(key=spec.name, task_id=res.task_id, success=res.success,
                         steps=res.steps, reason=res.reason, wins=wins, error=res.error))

    async with open_checkpointer(app.settings, sqlite_path=checkpoint_db) as saver:
        graph = AgentGraph(
            ladder=ladder,
            env_factory=make_env_factory(spec.env, **spec.env_kwargs),
            ledger=episode_ledger,
            memory=memory,
            config=loop,
            checkpointer=saver,
            env_name=spec.env,
        )
        try:
            results = await graph.run_many(
                run_id=run_id,
                task_ids=spec.task_ids,
                split=spec.split,
                concurrency=spec.concurrency,
                on_done=done,
            )
        finally:
            graph.close()
    if graph.fatal is not None:  # a dead model backend: what finished is recorded; stop
        raise graph.fatal
    return run_id, results, config


def make_env_factory(env_name: str, **kw: Any) -> Callable[[], Any]:
    """A factory of fresh environment instances."""
    from nightowl.envs.registry import make_env

    return lambda: make_env(env_name, **kw)


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
    errors: dict[str, int] = {}
    for r in results:
        if r.error:
            errors[r.error[:120]] = errors.get(r.error[:120], 0) + 1
    n = len(played)
    succ = sum(r.success for r in played)
    steps = sum(r.steps for r in played)
    samples = sum(r.stats.get("student_samples", 0.0) for r in played)
    overhead = sum(r.stats.get("node_s", 0.0) + r.stats.get("retrieve_s", 0.0) for r in played)
    rate = succ / n if n else 0.0
    cpe = (rep.total_cost - rep.error_cost) / n if n else 0.0
    reasons: dict[str, int] = {}
    for r in played:
        key = r.reason.split(" (")[0][:60]
        reasons[key] = reasons.get(key, 0) + 1
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
        reasons=reasons,
        errors=sum(errors.values()),
        error_reasons=errors,
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


__all__ = [
    "DEMO_PRESETS",
    "LADDER_PRESETS",
    "RunSpec",
    "RunSummary",
    "run_episodes",
    "run_tasks",
    "summarize",
    "validate_spec",
]
