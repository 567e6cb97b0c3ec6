"""Use case: one run spread over workers -- one queued message per episode.

`start_distributed_run` validates the spec, opens the ledger run and enqueues one
`EpisodeJob` per task on a `EpisodeQueue` (the Celery app's ``episodes`` queue).
Any number of workers, on any number of hosts sharing the broker and the database,
call `run_episode_job`: it refreshes the worker's FAISS index from SQL, then runs the
episode inside the same ledger run. The episode's LangGraph thread id is
``run_id/task_id``, so a job redelivered after its worker died resumes from that
thread's last checkpoint (checkpoints live where the database is), and a finished
episode is returned as is: no finished step is run or billed twice.
`nightowl report RUN_ID` reads the run while it is in flight.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

from pydantic import BaseModel

from nightowl.app.runs import DEMO_PRESETS, RunSpec, run_config, run_episodes, validate_spec

if TYPE_CHECKING:
    from nightowl.app.root import Nightowl


class EpisodeJob(BaseModel):
    """One episode of a distributed run (the Celery payload): the run's spec, one task."""

    run_id: str
    spec: RunSpec  # a stdlib dataclass: pydantic validates and serialises it as JSON

    @property
    def task_id(self) -> str:
        """The episode's task."""
        return self.spec.task_ids[0]


class EpisodeOutcome(BaseModel):
    """What one episode job did (the Celery task's JSON result)."""

    run_id: str
    task_id: str
    success: bool
    steps: int
    reason: str


class EpisodeQueue(Protocol):
    """Where episode jobs go (the Celery app in `nightowl.workers` is one)."""

    def enqueue_episode(self, job: EpisodeJob) -> str:
        """Send one job; returns its task id (raises UserError when unreachable)."""


def start_distributed_run(app: Nightowl, spec: RunSpec, queue: EpisodeQueue) -> str:
    """Validate, open the ledger run, enqueue one job per task; returns the run id."""
    validate_spec(app.settings, spec)
    config = {**run_config(app, spec), "via": "queue"}
    run_id = app.ledger.start_run(spec.name, spec.kind, config, run_id=spec.run_id)
    for task_id in spec.task_ids:
        one = replace(spec, task_ids=[task_id], concurrency=1, run_id=run_id)
        queue.enqueue_episode(EpisodeJob(run_id=run_id, spec=one))
    return run_id


async def run_episode_job(app: Nightowl, job: EpisodeJob) -> EpisodeOutcome:
    """Run (or resume, or return the finished result of) one queued episode."""
    spec = job.spec
    if spec.ladder in DEMO_PRESETS and spec.retrieve:
        app.memory.refresh()  # demos other workers or hosts added since this index was built
    _, results, _ = await run_episodes(app, spec)
    ep = results[0]
    return EpisodeOutcome(run_id=job.run_id, task_id=job.task_id, success=ep.success,
                          steps=ep.steps, reason=ep.reason)
