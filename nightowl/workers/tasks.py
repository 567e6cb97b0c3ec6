"""Celery tasks: thin wrappers that call the same service functions as the CLI.

Payloads are JSON validated by pydantic. A sleep-time job that cannot run now (serving
busy, another worker holds it, it yielded between rounds) re-queues itself as a new
message with a countdown, so deferrals never count against the bounded retries that
real failures get (``autoretry_for`` with exponential backoff).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from celery import current_app, shared_task
from celery.signals import worker_ready
from pydantic import BaseModel
from sqlalchemy.exc import OperationalError

from nightowl.app import Nightowl
from nightowl.config import Settings, get_settings, load_settings
from nightowl.errors import RunError
from nightowl.sleeptime.service import RETRY_STATUSES, worker_id
from nightowl.telemetry import setup_tracing
from nightowl.workers.guards import confined, parse, plain_name
from nightowl.workers.queue import CeleryQueue, LearnPayload, ThreadRethinkPayload, enqueue_learn

log = logging.getLogger(__name__)
#: options every job shares: ack after the task returns, redeliver when a worker dies,
#: bounded retries with backoff on database hiccups
_RELIABLE: dict[str, Any] = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": (OperationalError,),
    "retry_backoff": 5,
    "max_retries": load_settings().sleep.max_retries,  # read once, uncached, at import
}


_ROOT: list[tuple[int, Settings, Nightowl]] = []


def root() -> Nightowl:
    """The worker process's composition root (built after fork, on first use).

    Rebuilt when the process's settings object changes (tests clear it) and in a forked
    child (a pool process never shares its parent's database connections; the parent's
    root is left alone, not closed).
    """
    settings = get_settings()
    pid = os.getpid()
    setup_tracing(settings)  # once per (forked) process; OTLP traces only when configured
    if not _ROOT or _ROOT[0][0] != pid or _ROOT[0][1] is not settings:
        _ROOT[:] = [(pid, settings, Nightowl.open(settings))]
    return _ROOT[0][2]


@shared_task(
    bind=True,
    name="nightowl.sleep.learn",
    **{**_RELIABLE, "autoretry_for": (RunError, OperationalError)},
    retry_backoff_max=300,
    retry_jitter=True,
)
def learn_context(self, payload: dict) -> dict:  # type: ignore[no-untyped-def]
    """Compute the learned context of one context (idempotent)."""
    job = parse(LearnPayload, payload, "nightowl.sleep.learn")
    outcome = root().sleep.learn_sync(job.context_id, job.config, worker=worker_id(self.request.id))
    if outcome.status in RETRY_STATUSES:
        again = job.model_copy(update={"deferrals": job.deferrals + 1})
        self.apply_async(
            args=[again.model_dump(mode="json")], countdown=outcome.retry_in_s
        )
        log.info(
            "sleep job %s %s; re-queued in %.1fs",
            job.context_id,
            outcome.status,
            outcome.retry_in_s,
        )
    return outcome.model_dump(mode="json")


@shared_task(bind=True, name="nightowl.sleep.scan", acks_late=True)
def scan_contexts(self) -> dict:  # type: ignore[no-untyped-def]
    """Beat: enqueue a job for every context that needs a c', by priority."""
    enqueued = [enqueue_learn(ref, app=self.app) for ref in root().sleep.schedulable()]
    return {"enqueued": len(enqueued)}


@shared_task(name="nightowl.sleep.rethink_thread", **_RELIABLE)
def rethink_thread(payload: dict) -> dict:
    """Rethink one chat thread into a c' (a no-op when its c' covers its revision)."""
    from nightowl.chat.sleep import rethink_thread_job

    job = parse(ThreadRethinkPayload, payload, "nightowl.sleep.rethink_thread")
    base = root()
    name = job.model or base.student
    outcome = asyncio.run(
        rethink_thread_job(base.db, base.ledger, base.backend(name), base.prices(name),
                           job.thread_id)
    )
    return outcome.model_dump(mode="json")


class IndexRebuildPayload(BaseModel):
    """Rebuild the demo-memory FAISS indexes from SQL."""

    reembed: bool = False
    index_dir: str | None = None
    embedder: str | None = None


@shared_task(name="nightowl.index.rebuild", **_RELIABLE)
def rebuild_index(payload: dict) -> dict:
    """Rebuild every demo index from SQL (idempotent: SQL is the source of truth)."""
    name = "nightowl.index.rebuild"
    what = "rebuilding the demo indexes"
    job = parse(IndexRebuildPayload, payload, name)
    base = root()
    if job.index_dir is None and job.embedder is None:
        return {"rebuilt": base.demo_memory(what).rebuild(reembed=job.reembed)}
    from nightowl.memory import build_embedder

    # index files go only under the data home; a message cannot name a path elsewhere
    index_dir = confined(job.index_dir, base.settings.home, name) if job.index_dir else None
    model = plain_name(job.embedder or base.settings.embedder, name)
    embedder = build_embedder(model, threads=base.settings.threads)
    with base.with_memory(embedder=embedder, memory_dir=index_dir) as other:
        return {"rebuilt": other.demo_memory(what).rebuild(reembed=job.reembed)}


@shared_task(name="nightowl.demos.collect", **_RELIABLE)
def collect_demos(payload: dict) -> dict:
    """Run the teacher on tasks and add the successful episodes as demos.

    Idempotent when the payload carries a ``run_id``: a redelivered message resumes
    that ledger run from its checkpoints and re-adding a demo replaces it.
    """
    from nightowl.app import CollectRequest
    from nightowl.app import collect_demos as collect

    job = parse(CollectRequest, payload, "nightowl.demos.collect")
    res = asyncio.run(collect(root(), job))
    return res.model_dump(mode="json", exclude={"summary"})


@shared_task(name="nightowl.episodes.run", **_RELIABLE)
def run_episode(payload: dict) -> dict:
    """Run one episode of a distributed run under its lease (resumes from its checkpoint)."""
    from nightowl.app.distributed import EpisodeJob, run_episode_job

    job = parse(EpisodeJob, payload, "nightowl.episodes.run")
    return asyncio.run(run_episode_job(root(), job)).model_dump(mode="json")


_MONITOR: list[Any] = []


@worker_ready.connect
def start_lease_monitor(sender: Any = None, **_: Any) -> None:
    """A worker consuming ``episodes`` re-queues expired episode leases (every check_s)."""
    from functools import partial

    from nightowl.app.leasing import Ticker, check_leases, load_lease_settings

    try:
        queues = {q.name for q in sender.task_consumer.queues}
    except AttributeError:
        queues = {"episodes"}
    if "episodes" not in queues or _MONITOR:
        return
    settings = load_lease_settings()
    queue = CeleryQueue(getattr(sender, "app", None) or current_app)
    monitor = Ticker("nightowl-lease-monitor", settings.check_every,
                     partial(check_leases, root().db, queue, settings), "lease check").start()
    _MONITOR.append(monitor)
    log.info("lease monitor: lease %.0f s, check every %.1f s", settings.lease_s,
             settings.check_every)
