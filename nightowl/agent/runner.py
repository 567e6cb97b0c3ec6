"""Shared pieces for `nightowl run / collect / demo / calibrate`: ladders, runs, summaries.

`Workbench` opens the database, ledger, demo memory and student backend once;
`build_ladder` turns a preset name ("teacher", "student", "student+demos", "cascade",
"margin", "bavt") into tiers; `run_tasks` runs one ladder over tasks concurrently as one ledger
run (with SQLite checkpoints, so an interrupted run resumes) and returns a `RunSummary`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from pydantic import BaseModel

from nightowl.agent import presets
from nightowl.agent.acceptance import AcceptanceRule
from nightowl.agent.budget import EpisodeBudget
from nightowl.agent.graph import AgentGraph, EpisodeResult, LoopConfig
from nightowl.agent.ladder import Ladder
from nightowl.agent.presets import LADDER_PRESETS, validate_ladder  # noqa: F401 - re-exported
from nightowl.agent.state import checkpoint_path
from nightowl.config import Settings
from nightowl.distill.prompt import PromptBuilder
from nightowl.errors import UnknownNameError


@dataclass(kw_only=True)
class Workbench:
    """Opened resources for agent commands (lazy where loading is slow)."""

    settings: Settings
    db: Any
    ledger: Any
    memory_dir: Path | None = None
    embedder: Any = None
    _memory: Any = None
    _student: Any = None
    student_name: str = ""

    @classmethod
    def open(
        cls, settings: Settings, *, db_url: str | None = None, embedder: Any = None
    ) -> Workbench:
        """Open the database (migrated) and the ledger."""
        from nightowl.ledger import Ledger
        from nightowl.storage import open_db

        db = open_db(settings, url=db_url) if db_url else open_db(settings)
        return cls(settings=settings, db=db, ledger=Ledger(db), embedder=embedder)

    @property
    def memory(self) -> Any:
        """The demo memory (opened on first use)."""
        if self._memory is None:
            from nightowl.memory.store import DemoMemory

            self._memory = DemoMemory(
                self.db, self.embedder, self.memory_dir, settings=self.settings
            )
        return self._memory

    def student_backend(self, name: str | None = None) -> Any:
        """The student's backend (process-wide cache in the registry)."""
        from nightowl.llm.registry import build_backend

        name = name or self.settings.student_model
        if self._student is None or self.student_name != name:
            self._student = build_backend(name, self.settings)
            self.student_name = name
        return self._student

    def close(self) -> None:
        """Flush the memory's indexes."""
        if self._memory is not None:
            self._memory.close()


def make_env_factory(env_name: str, **kw: Any) -> Callable[[], Any]:
    """A factory of fresh environment instances."""
    from nightowl.envs.registry import make_env

    return lambda: make_env(env_name, **kw)


def select_tasks(
    env_name: str, split: str, n: int, *, game: str | None = None, offset: int = 0
) -> list[str]:
    """The first ``n`` task ids of a split (optionally one game), after ``offset``."""
    from nightowl.envs.registry import make_env

    env = make_env(env_name)
    try:
        try:
            specs = env.tasks(split, game=game) if game else env.tasks(split)  # type: ignore[call-arg,arg-type]
        except TypeError:
            specs = env.tasks(split)  # type: ignore[arg-type]
        ids = [s.task_id for s in specs]
        if game:
            ids = [t for t in ids if f"/{game}/" in t]
        if not ids:
            raise UnknownNameError(f"{split} tasks of", f"{env_name}/{game or '*'}")
        return ids[offset : offset + n]
    finally:
        env.close()


def build_ladder(
    preset: str,
    *,
    wb: Workbench,
    run_id: str,
    student: str | None = None,
    teacher: str = "oracle",
    rule: AcceptanceRule | str | None = None,
    temperature: float = 0.5,
    builder: PromptBuilder | None = None,
    fallback: str = "best",
    avoid_repeats: bool = True,
) -> Ladder:
    """`nightowl.agent.presets.build_ladder` with the workbench's settings, ledger, models."""
    from nightowl.llm.registry import build_backend

    return presets.build_ladder(
        preset, settings=wb.settings, ledger=wb.ledger, run_id=run_id,
        student_backend=wb.student_backend,
        teacher_backend=lambda name: build_backend(name, wb.settings),
        student=student, teacher=teacher, rule=rule, temperature=temperature,
        builder=builder, fallback=fallback, avoid_repeats=avoid_repeats,
    )


class RunSummary(BaseModel):
    """One configuration's results over a task set (one ledger run)."""

    name: str
    run_id: str
    ladder: str
    episodes: int
    successes: int
    success_rate: float
    total_cost: float
    cost_per_episode: float
    cost_of_pass: float
    teacher_call_fraction: float
    ledger_teacher_call_fraction: float
    student_samples_per_step: float
    steps_per_episode: float
    wall_s: float
    overhead_ms_per_step: float
    reasons: dict[str, int]
    config: dict[str, Any]
    episodes_detail: list[dict[str, Any]] = []


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
    n = len(results)
    succ = sum(r.success for r in results)
    steps = sum(r.steps for r in results)
    samples = sum(r.stats.get("student_samples", 0.0) for r in results)
    teacher_calls = sum(r.stats.get("teacher_calls", 0.0) for r in results)
    overhead = sum(r.stats.get("node_s", 0.0) + r.stats.get("retrieve_s", 0.0) for r in results)
    rate = succ / n if n else 0.0
    cpe = rep.total_cost / n if n else 0.0
    reasons: dict[str, int] = {}
    for r in results:
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
        teacher_call_fraction=teacher_calls / steps if steps else 0.0,
        ledger_teacher_call_fraction=float(rep.teacher_call_fraction or 0.0),
        student_samples_per_step=samples / steps if steps else 0.0,
        steps_per_episode=steps / n if n else 0.0,
        wall_s=wall_s,
        overhead_ms_per_step=1000 * overhead / steps if steps else 0.0,
        reasons=reasons,
        config=config,
        episodes_detail=[
            {
                "task_id": r.task_id,
                "episode_id": r.episode_id,
                "success": r.success,
                "steps": r.steps,
                "reason": r.reason,
                "teacher_calls": r.stats.get("teacher_calls", 0.0),
                "student_samples": r.stats.get("student_samples", 0.0),
                "cost_usd": r.stats.get("cost_usd", 0.0),
            }
            for r in results
        ],
    )


@dataclass(kw_only=True)
class RunSpec:
    """What to run: one ladder over a task list."""

    name: str
    env: str
    split: str
    task_ids: list[str]
    ladder: str = "cascade"
    rule: str | None = None
    temperature: float = 0.5
    teacher: str = "oracle"
    student: str | None = None
    budget: EpisodeBudget = field(default_factory=EpisodeBudget)
    retrieve: bool = True
    concurrency: int = 4
    store_escalations: bool = False
    k_episodes: int = 2
    window: int = 3
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    kind: str = "run"


async def run_tasks(
    wb: Workbench,
    spec: RunSpec,
    *,
    on_done: Callable[[EpisodeResult], None] | None = None,
    checkpoint_db: Path | None = None,
) -> RunSummary:
    """Run ``spec`` as one ledger run (resuming it when ``spec.run_id`` exists)."""
    config = {
        "env": spec.env,
        "split": spec.split,
        "tasks": spec.task_ids,
        "ladder": spec.ladder,
        "rule": spec.rule,
        "temperature": spec.temperature,
        "teacher": spec.teacher,
        "student": spec.student or wb.settings.student_model,
        "budget": spec.budget.model_dump(),
        "retrieve": spec.retrieve,
        "concurrency": spec.concurrency,
    }
    # bad inputs fail here, before a run row is written or an environment starts
    validate_ladder(spec.ladder, spec.rule, spec.student, spec.teacher, wb.settings)
    if spec.run_id and wb.ledger.run_exists(spec.run_id):
        run_id = spec.run_id
    else:
        run_id = wb.ledger.start_run(spec.name, spec.kind, config, run_id=spec.run_id)
    ladder = build_ladder(
        spec.ladder,
        wb=wb,
        run_id=run_id,
        student=spec.student,
        teacher=spec.teacher,
        rule=spec.rule,
        temperature=spec.temperature,
    )
    config["tiers"] = ladder.describe()
    uses_demos = spec.ladder in ("student+demos", "cascade", "margin", "bavt") and spec.retrieve
    memory = wb.memory if (uses_demos or spec.store_escalations) else None
    loop = LoopConfig(
        budget=spec.budget,
        retrieve=uses_demos,
        k_episodes=spec.k_episodes,
        window=spec.window,
        store_escalations=spec.store_escalations,
    )
    ck = checkpoint_db or checkpoint_path(wb.settings.home)
    ck.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    async with AsyncSqliteSaver.from_conn_string(str(ck)) as saver:
        graph = AgentGraph(
            ladder=ladder,
            env_factory=make_env_factory(spec.env, **spec.env_kwargs),
            ledger=wb.ledger,
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
                on_done=on_done,
            )
        finally:
            graph.close()
    wall = time.perf_counter() - t0
    return summarize(spec.name, spec.ladder, run_id, results, wb.ledger, wall, config)


def add_demos(wb: Workbench, summary: RunSummary, goal_of: dict[str, str] | None = None) -> int:
    """Make every successful episode of a run a demo (source "collect"); returns the count."""
    mem = wb.memory
    added = 0
    for ep in summary.episodes_detail:
        if not ep["success"]:
            continue
        steps = mem.episode_steps(ep["episode_id"])
        if not steps:
            continue
        goal = (goal_of or {}).get(ep["task_id"]) or _episode_goal(wb, ep["task_id"], steps)
        mem.add_episode(ep["episode_id"], goal, steps, source="collect")
        added += 1
    mem.flush()
    return added


def _episode_goal(wb: Workbench, task_id: str, steps: Sequence[Any]) -> str:
    meta = getattr(steps[0], "meta", None) or {}
    if meta.get("goal"):
        return str(meta["goal"])
    return task_id
