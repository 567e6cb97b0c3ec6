"""Celery tasks: thin wrappers that call the same service functions as the CLI.

Payloads are JSON validated by pydantic. A sleep-time job that cannot run now (serving
busy, another worker holds it, it yielded between rounds) re-queues itself as a new
message with a countdown, so deferrals never count against the bounded retries that
real failures get (``autoretry_for`` with exponential backoff).
"""

from __future__ import annotations

import logging
from functools import lru_cache

from pydantic import BaseModel
from sqlalchemy.exc import OperationalError

from nightowl.errors import RunError
from nightowl.sleeptime.service import RETRY_STATUSES, SleepService, worker_id
from nightowl.sleeptime.settings import load_sleep_settings
from nightowl.workers.app import LearnPayload, app, enqueue_learn

log = logging.getLogger(__name__)
_MAX_RETRIES = load_sleep_settings().max_retries


@lru_cache(maxsize=1)
def service() -> SleepService:
    """The worker process's service (built after fork, on first use)."""
    return SleepService()


@app.task(
    bind=True,
    name="nightowl.sleep.learn",
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(RunError, OperationalError),
    retry_backoff=5,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=_MAX_RETRIES,
)
def learn_context(self, payload: dict) -> dict:  # type: ignore[no-untyped-def]
    """Compute the learned context of one context (idempotent)."""
    job = LearnPayload.model_validate(payload)
    outcome = service().learn_sync(job.context_id, job.config, worker=worker_id(self.request.id))
    if outcome.status in RETRY_STATUSES:
        again = job.model_copy(update={"deferrals": job.deferrals + 1})
        learn_context.apply_async(
            args=[again.model_dump(mode="json")], countdown=outcome.retry_in_s
        )
        log.info(
            "sleep job %s %s; re-queued in %.1fs",
            job.context_id,
            outcome.status,
            outcome.retry_in_s,
        )
    return outcome.model_dump(mode="json")


@app.task(name="nightowl.sleep.scan", acks_late=True)
def scan_contexts() -> dict:
    """Beat: enqueue a job for every context that needs a c', by priority."""
    svc = service()
    enqueued = [enqueue_learn(ctx_id, app=app) for ctx_id in svc.schedulable()]
    return {"enqueued": len(enqueued)}


class IndexRebuildPayload(BaseModel):
    """Rebuild the demo-memory FAISS indexes from SQL."""

    reembed: bool = False
    index_dir: str | None = None
    embedder: str | None = None


@app.task(
    name="nightowl.index.rebuild",
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(OperationalError,),
    retry_backoff=5,
    max_retries=_MAX_RETRIES,
)
def rebuild_index(payload: dict) -> dict:
    """Rebuild every demo index from SQL (idempotent: SQL is the source of truth)."""
    from nightowl.config import get_settings
    from nightowl.memory import DemoMemory, build_embedder
    from nightowl.storage import open_db

    job = IndexRebuildPayload.model_validate(payload)
    settings = get_settings()
    embedder = build_embedder(job.embedder or settings.embedder, threads=settings.threads)
    memory = DemoMemory(open_db(settings), embedder, job.index_dir, settings)
    try:
        counts = memory.rebuild(reembed=job.reembed)
    finally:
        memory.close()
    return {"rebuilt": counts}


class CollectPayload(BaseModel):
    """Teacher demo collection: the same parameters as `nightowl collect`."""

    env: str
    teacher: str = "oracle"
    split: str = "train"
    tasks: int = 20
    game: str | None = None
    max_steps: int = 40
    concurrency: int = 4


@app.task(
    name="nightowl.demos.collect",
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(OperationalError,),
    retry_backoff=5,
    max_retries=_MAX_RETRIES,
)
def collect_demos(payload: dict) -> dict:
    """Run the teacher on tasks and add the successful episodes as demos.

    Not idempotent like sleep-time jobs: a redelivered collection runs again as a new
    run (its demos are added again); delete a run's demos with `nightowl memory
    delete-run`.
    """
    import asyncio

    from nightowl.agent.budget import EpisodeBudget
    from nightowl.agent.runner import RunSpec, Workbench, add_demos, run_tasks, select_tasks
    from nightowl.config import get_settings

    job = CollectPayload.model_validate(payload)
    wb = Workbench.open(get_settings())
    try:
        ids = select_tasks(job.env, job.split, job.tasks, game=job.game)
        spec = RunSpec(
            name=f"collect:{job.env}",
            env=job.env,
            split=job.split,
            task_ids=ids,
            ladder="teacher",
            teacher=job.teacher,
            budget=EpisodeBudget.model_validate({"max_steps": job.max_steps}),
            retrieve=False,
            concurrency=job.concurrency,
            kind="collect",
        )
        summary = asyncio.run(run_tasks(wb, spec))
        added = add_demos(wb, summary)
    finally:
        wb.close()
    return {
        "run_id": summary.run_id,
        "episodes": summary.episodes,
        "successes": summary.successes,
        "demos_added": added,
        "collection_cost": summary.total_cost,
    }
