"""Use cases of sleep-time compute: which contexts to learn, learn them, rebuild indexes.

The jobs themselves are `nightowl.sleeptime.service.SleepService.learn` (built by the
root as ``app.sleep``); a broker, when configured, is handed in by the caller as a
`JobQueue` (the Celery app in `nightowl.workers` is one), so this layer never imports
the workers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from nightowl.config_sleep import GeneratorConfig
from nightowl.sleeptime.runner import RunnerEvent, run_jobs
from nightowl.sleeptime.service import JobOutcome

if TYPE_CHECKING:
    from nightowl.app.root import Nightowl


class JobQueue(Protocol):
    """Where sleep-time jobs go when a broker is configured."""

    def enqueue_learn(self, context_id: str, config: GeneratorConfig | None = None) -> str:
        """Send one job; returns its task id (raises UserError when unreachable)."""


def contexts_to_learn(app: Nightowl, context: str | None = None) -> list[str]:
    """One context (by id, prefix or name) or every context needing a c', by priority."""
    svc = app.sleep
    if context:
        return [svc.store.get(context).id]
    return [w.context.id for w in svc.plan(measure=svc.probe.check().idle)]


def learn_contexts(
    app: Nightowl,
    refs: list[str],
    *,
    config: GeneratorConfig | None = None,
    queue: JobQueue | None = None,
    max_wait_s: float = 600.0,
    on_event: Callable[[RunnerEvent], None] | None = None,
) -> tuple[list[str], list[JobOutcome]]:
    """Enqueue the jobs (with a queue) or run them here; returns (task ids, outcomes)."""
    if queue is not None:
        return [queue.enqueue_learn(ref, config) for ref in refs], []
    return [], run_jobs(app.sleep, refs, config=config, max_wait_s=max_wait_s, on_event=on_event)


def rebuild_index(app: Nightowl, *, reembed: bool = False) -> dict[str, int]:
    """Rebuild every demo index from SQL (idempotent: SQL is the source of truth)."""
    return app.demo_memory("rebuilding the demo indexes").rebuild(reembed=reembed)
