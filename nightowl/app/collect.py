"""Use case: the teacher solves tasks; its successful episodes become demos.

One flow for `nightowl collect`, the Celery ``nightowl.demos.collect`` task, the
showcase demo and scripts. With a ``run_id`` the collection is idempotent: a repeated
request (a redelivered Celery message) resumes the same ledger run from its
checkpoints, and re-adding an episode that is already a demo replaces it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from nightowl.agent.budget import EpisodeBudget
from nightowl.app.events import PhaseNote, ProgressSink, ignore
from nightowl.app.runs import RunSpec, RunSummary, run_tasks
from nightowl.envs.registry import select_tasks

if TYPE_CHECKING:
    from nightowl.app.root import Nightowl


class CollectRequest(BaseModel):
    """What to collect (the parameters of `nightowl collect`)."""

    env: str
    teacher: str = "oracle"
    split: str = "train"
    tasks: int = Field(20, ge=1)
    game: str | None = None
    max_steps: int = Field(40, ge=1)
    concurrency: int = Field(4, ge=1)
    offset: int = Field(0, ge=0)
    run_id: str | None = Field(None, description="resume/make idempotent under this run id")
    name: str | None = Field(None, description="ledger run name (default collect:<env>)")


class CollectResult(BaseModel):
    """What a collection did."""

    run_id: str
    episodes: int
    successes: int
    demos_added: int
    collection_cost: float
    summary: RunSummary


async def collect_demos(
    app: Nightowl,
    request: CollectRequest,
    *,
    task_ids: Sequence[str] | None = None,
    progress: ProgressSink | None = None,
) -> CollectResult:
    """Run the teacher on ``request``'s tasks and store every successful episode as a demo."""
    sink = progress or ignore
    ids = list(task_ids) if task_ids is not None else select_tasks(
        request.env, request.split, request.tasks, game=request.game, offset=request.offset
    )
    spec = RunSpec(
        name=request.name or f"collect:{request.env}",
        env=request.env,
        split=request.split,
        task_ids=ids,
        ladder="teacher",
        teacher=request.teacher,
        budget=EpisodeBudget(max_steps=request.max_steps),
        retrieve=False,
        concurrency=request.concurrency,
        kind="collect",
        run_id=request.run_id,
    )
    summary = await run_tasks(app, spec, progress=sink)
    sink(PhaseNote(key=spec.name, note=f"won {summary.successes}; embedding demos"))
    added = add_demos(app, summary)
    sink(PhaseNote(key=spec.name, note=f"{added} demos stored"))
    return CollectResult(
        run_id=summary.run_id,
        episodes=summary.episodes,
        successes=summary.successes,
        demos_added=added,
        collection_cost=summary.total_cost,
        summary=summary,
    )


def add_demos(app: Nightowl, summary: RunSummary, goal_of: dict[str, str] | None = None) -> int:
    """Make every successful episode of a run a demo (source "collect"); returns the count."""
    mem = app.memory
    added = 0
    for ep in summary.episodes_detail:
        if not ep["success"]:
            continue
        steps = mem.episode_steps(ep["episode_id"])
        if not steps:
            continue
        goal = (goal_of or {}).get(ep["task_id"]) or _episode_goal(ep["task_id"], steps)
        mem.add_episode(ep["episode_id"], goal, steps, source="collect")
        added += 1
    mem.flush()
    return added


def _episode_goal(task_id: str, steps: Sequence[Any]) -> str:
    meta = getattr(steps[0], "meta", None) or {}
    if meta.get("goal"):
        return str(meta["goal"])
    return task_id
