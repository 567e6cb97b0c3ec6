"""The in-process runner: sleep-time jobs without a broker.

`nightowl sleep run` uses this when no broker is configured: it runs the same
`SleepService.learn` the Celery task runs, one job after another, in priority order.
A job that is deferred (serving busy, held by another worker, yielded between rounds)
is retried after its countdown, as the Celery task would be re-queued, until it is
stored or ``max_wait_s`` runs out (then it is reported as still pending, not dropped:
the next `sleep run` or worker scan picks it up again).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from nightowl.config_sleep import GeneratorConfig
from nightowl.sleeptime.service import RETRY_STATUSES, JobOutcome, SleepService, worker_id


@dataclass(frozen=True, kw_only=True)
class RunnerEvent:
    """One attempt of one job, for progress display."""

    outcome: JobOutcome


def run_jobs(
    service: SleepService,
    refs: list[str],
    *,
    config: GeneratorConfig | None = None,
    max_wait_s: float = 600.0,
    on_event: Callable[[RunnerEvent], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[JobOutcome]:
    """Run the jobs for ``refs`` in order; returns each job's last outcome."""
    outcomes = []
    worker = worker_id("inproc")
    for ref in refs:
        deadline = time.monotonic() + max_wait_s
        while True:
            outcome = service.learn_sync(ref, config, worker=worker)
            if on_event is not None:
                on_event(RunnerEvent(outcome=outcome))
            if outcome.status not in RETRY_STATUSES:
                break
            wait = min(outcome.retry_in_s, max(deadline - time.monotonic(), 0.0))
            if wait <= 0:
                break
            sleep(wait)
        outcomes.append(outcome)
    return outcomes
