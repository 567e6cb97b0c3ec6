"""Use case: the teacher solves tasks; its successful episodes become demos.

One flow for `nightowl collect`, the Celery ``nightowl.demos.collect`` task, the
showcase demo and scripts. With a ``run_id`` the collection is idempotent: a repeated
request (a redelivered Celery message) resumes the same ledger run from its
checkpoints, and re-adding an episode that is already a demo replaces it.

Collecting the same tasks with the same teacher again never duplicates demos: by default
the tasks that teacher already has a demo of are skipped (and cost nothing); with
``existing="replace"`` they are collected again and each new demo replaces the old
ones of its task (an old demo stays when the new episode is lost). The result lists the
skipped tasks and counts the replaced demos.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from nightowl.agent.budget import EpisodeBudget
from nightowl.app.events import Message, PhaseNote, ProgressSink, ignore
from nightowl.app.plan import RunSpec
from nightowl.app.runs import RunSummary, run_tasks
from nightowl.envs.registry import select_tasks
from nightowl.memory.collected import collected_demos

if TYPE_CHECKING:
    from nightowl.app.root import Nightowl


class CollectRequest(BaseModel):
    """What to collect (the parameters of `nightowl collect`)."""

    env: str
    teacher: str = "oracle"
    split: str = "train"
    tasks: int = Field(20, ge=1)
    game: str | None = None
    max_steps: int | None = Field(
        None, ge=1, description="step budget per episode (None: the environment's default, "
        "nightowl.agent.budget.DEFAULT_MAX_STEPS unless it declares its own)",
    )
    student_dtype: str | None = Field(
        None, description="the in-process student's dtype (None: the registry's); the "
        "student bills the oracle with its tokenizer, and runs as a teacher of its own name",
    )
    concurrency: int = Field(4, ge=1)
    offset: int = Field(0, ge=0)
    run_id: str | None = Field(None, description="resume/make idempotent under this run id")
    name: str | None = Field(None, description="ledger run name (default collect:<env>)")
    existing: Literal["skip", "replace"] = Field(
        "skip",
        description="tasks this teacher already has demos of: skip them (no cost), or "
        "collect them again and replace their old demos with the new ones",
    )


class CollectResult(BaseModel):
    """What a collection did."""

    model_config = ConfigDict(ser_json_inf_nan="constants")  # cost_of_pass may be inf

    run_id: str | None = Field(description="None when every task was skipped")
    episodes: int
    successes: int
    demos_added: int
    collection_cost: float
    summary: RunSummary | None = Field(None, description="None when every task was skipped")
    #: tasks left out because this teacher already has a demo of them (existing="skip")
    skipped: list[str] = []
    #: old demos dropped because a new demo of the same task replaced them
    replaced: int = 0


async def collect_demos(
    app: Nightowl,
    request: CollectRequest,
    *,
    task_ids: Sequence[str] | None = None,
    progress: ProgressSink | None = None,
) -> CollectResult:
    """Run the teacher on ``request``'s tasks and store every successful episode as a demo.

    The request is resolved into its run plan before a task is chosen (bad input fails
    before anything starts).
    """
    sink = progress or ignore
    plan = RunSpec(
        name=request.name or f"collect:{request.env}",
        env=request.env,
        split=request.split,
        task_ids=[],
        ladder="teacher",
        teacher=request.teacher,
        student_dtype=request.student_dtype,
        budget=(EpisodeBudget(max_steps=request.max_steps) if request.max_steps
                else EpisodeBudget()),
        retrieve=False,
        concurrency=request.concurrency,
        kind="collect",
        run_id=request.run_id,
    ).resolved(app.settings)
    ids = list(task_ids) if task_ids is not None else select_tasks(
        request.env, request.split, request.tasks, game=request.game, offset=request.offset
    )
    before = collected_demos(app.db, request.env, ids, request.teacher,
                             exclude_run=request.run_id)
    skipped: list[str] = []
    if request.existing == "skip" and before:
        skipped = [t for t in ids if t in before]
        ids = [t for t in ids if t not in before]
        sink(Message(text=f"skipping {len(skipped)} task(s) already collected with teacher "
                          f"{request.teacher} (existing='replace' collects them again)"))
        if not ids:
            return CollectResult(run_id=None, episodes=0, successes=0, demos_added=0,
                                 collection_cost=0.0, skipped=skipped)
    summary = await run_tasks(app, plan.with_tasks(ids), progress=sink)
    sink(PhaseNote(key=plan.name, note=f"won {summary.successes}; embedding demos"))
    added = add_demos(app, summary)
    replaced = 0
    if request.existing == "replace" and before:
        won = {ep["task_id"] for ep in summary.episodes_detail if ep["success"]}
        for task in won & set(before):
            replaced += sum(app.memory.delete_episode(e) for e in before[task])
        app.memory.flush()
    note = f"{added} demos stored" + (f", {replaced} old ones replaced" if replaced else "")
    sink(PhaseNote(key=plan.name, note=note))
    return CollectResult(
        run_id=summary.run_id,
        episodes=summary.episodes,
        successes=summary.successes,
        demos_added=added,
        collection_cost=summary.total_cost,
        summary=summary,
        skipped=skipped,
        replaced=replaced,
    )


def add_demos(app: Nightowl, summary: RunSummary) -> int:
    """Make every successful episode of a run a demo (source "collect"); returns the count."""
    mem = app.memory
    added = 0
    for ep in summary.episodes_detail:
        if ep["success"] and (steps := mem.episode_steps(ep["episode_id"])):
            # the goal the first step recorded, else the task id
            goal = (steps[0].meta or {}).get("goal") or ep["task_id"]
            mem.add_episode(ep["episode_id"], str(goal), steps, source="collect")
            added += 1
    mem.flush()
    return added
