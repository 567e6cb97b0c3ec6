"""Use case: one run spread over workers -- one queued message per episode.

`start_distributed_run` resolves the spec into its plan (once, for the whole run),
opens the ledger run and enqueues one `EpisodeJob` per task on a `EpisodeQueue` (the
Celery app's ``episodes`` queue). A job carries the plan itself (JSON), so no worker
decides the student, the ladder or the budget again.
Any number of workers, on any number of hosts sharing the broker and the database,
call `run_episode_job`: it refreshes the worker's FAISS index from SQL, then runs the
episode inside the same ledger run, built from the job's plan. The episode's LangGraph thread id is
``run_id/task_id``, so a job redelivered after its worker died resumes from that
thread's last checkpoint (checkpoints live where the database is), and a finished
episode is returned as is: no finished step is run or billed twice.
`nightowl report RUN_ID` reads the run while it is in flight.

Leases (`nightowl.ledger.leases`, `nightowl.app.leasing`): each episode has a lease row
written before its message is sent. The worker that claims it heartbeats it and writes
the episode through a `FencedLedger`; an episode whose holder went silent for
``NIGHTOWL_EPISODE_LEASE_S`` is re-queued by whoever notices first and resumes from its
checkpoint on another worker; a message of an older generation (a late duplicate, or the
broker's own redelivery after a re-queue) is refused. An episode that raises, or is
claimed ``max_attempts`` times without finishing, fails as an infrastructure error.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal, Protocol

from pydantic import BaseModel, model_validator

from nightowl.app.leasing import Ticker, load_lease_settings
from nightowl.app.plan import RunPlan, RunSpec, as_plan
from nightowl.app.runs import run_config, run_episodes
from nightowl.ledger.fenced import FencedLedger
from nightowl.ledger.leases import LeaseLostError, LeaseRow, LeaseStore

if TYPE_CHECKING:
    from nightowl.agent.graph import EpisodeResult
    from nightowl.app.root import Nightowl

log = logging.getLogger(__name__)

class EpisodeJob(BaseModel):
    """One episode of a distributed run (the Celery payload): the run's plan, one task.

    ``gen`` is the lease generation the message was sent for (0, then one more per
    re-queue): a message behind its lease's generation is refused. ``spec`` is the
    payload of a message sent before plans travelled (its worker resolves it).
    """

    run_id: str
    plan: RunPlan | None = None
    spec: RunSpec | None = None  # a stdlib dataclass: pydantic validates it from JSON
    gen: int = 0

    @model_validator(mode="after")
    def _one_payload(self) -> EpisodeJob:
        if (self.plan is None) == (self.spec is None):
            raise ValueError("an episode job carries a plan (or, from before plans, a spec)")
        return self

    @property
    def task_id(self) -> str:
        """The episode's task."""
        return (self.plan or self.spec).task_ids[0]  # type: ignore[union-attr]

    def run_plan(self, app: Nightowl) -> RunPlan:
        """The plan this episode builds from (an old message's spec resolved here)."""
        return as_plan(app.settings, self.plan or self.spec)  # type: ignore[arg-type]


class EpisodeOutcome(BaseModel):
    """What one episode job did (the Celery task's JSON result)."""

    run_id: str
    task_id: str
    success: bool
    steps: int
    reason: str
    #: finished; refused (not claimed: late duplicate, live holder, already done);
    #: lost (the lease was taken over while it ran); unleased (a run from before leases)
    status: Literal["finished", "refused", "lost", "unleased"] = "finished"
    attempt: int = 0


class EpisodeQueue(Protocol):
    """Where episode jobs go (the Celery app in `nightowl.workers` is one)."""

    def enqueue_episode(self, job: EpisodeJob) -> str:
        """Send one job; returns its task id (raises UserError when unreachable)."""


def start_distributed_run(
    app: Nightowl, spec: RunPlan | RunSpec, queue: EpisodeQueue
) -> str:
    """Resolve (a spec), open the ledger run, lease and enqueue one job per task; the run id."""
    plan = as_plan(app.settings, spec)
    config = {**run_config(app, plan), "via": "queue"}
    run_id = app.ledger.start_run(plan.name, plan.kind, config, run_id=plan.run_id)
    leases = LeaseStore(app.db)
    for task_id in plan.task_ids:
        one = plan.model_copy(update={"task_ids": (task_id,), "concurrency": 1,
                                      "run_id": run_id})
        job = EpisodeJob(run_id=run_id, plan=one)
        leases.enqueue(run_id, task_id, job.model_dump(mode="json"))
        queue.enqueue_episode(job)
    return run_id


def _refusal(row: LeaseRow, gen: int) -> str:
    if row.gen != gen:
        return f"late duplicate: message generation {gen}, lease at {row.gen}"
    if row.state == "running":
        return f"held by {row.host}:{row.pid} (attempt {row.attempt}, lease live)"
    return f"episode {row.state}"


async def run_episode_job(app: Nightowl, job: EpisodeJob) -> EpisodeOutcome:
    """Claim, run (or resume) and finish one queued episode under its lease."""
    settings = load_lease_settings()
    plan = job.run_plan(app)
    leases = LeaseStore(app.db)

    def outcome(status: str, reason: str = "", attempt: int = 0,
                ep: EpisodeResult | None = None) -> EpisodeOutcome:
        """A played episode's outcome (``ep``), else one with nothing played for ``reason``."""
        return EpisodeOutcome(
            run_id=job.run_id, task_id=job.task_id, success=ep.success if ep else False,
            steps=ep.steps if ep else 0, reason=ep.reason if ep else reason,
            status=status, attempt=attempt)  # type: ignore[arg-type]

    holder = leases.claim(job.run_id, job.task_id, job.gen, settings.lease_s)
    if holder is None and (row := leases.get(job.run_id, job.task_id)) is not None:
        why = _refusal(row, job.gen)
        log.info("refused episode %s of run %s: %s", job.task_id, job.run_id[:8], why)
        return outcome("refused", why)
    if plan.uses_demos:
        app.memory.refresh()  # demos other workers or hosts added since this index was built
    if holder is None:  # a job of a run enqueued before leases existed: run it as before
        _, results, _ = await run_episodes(app, plan)
        return outcome("unleased", ep=results[0])
    fenced = FencedLedger(app.ledger, leases, holder)
    try:
        with Ticker("nightowl-heartbeat", settings.heartbeat_every,
                    lambda: leases.heartbeat(holder), f"heartbeat of {holder.task_id}"):
            _, results, _ = await run_episodes(app, plan, ledger=fenced)
    except LeaseLostError as exc:
        return outcome("lost", str(exc), holder.attempt)
    except Exception as exc:
        leases.fail(holder, f"{type(exc).__name__}: {exc}")
        raise
    if not leases.finish(holder):
        return outcome("lost", "lease taken over before the episode was marked done",
                       holder.attempt)
    return outcome("finished", attempt=holder.attempt, ep=results[0])

