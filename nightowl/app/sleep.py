"""Use cases of sleep-time compute: which contexts to learn, rebuild the demo indexes.

The jobs themselves are `nightowl.sleeptime.service.SleepService.learn` (built by the
root as ``app.sleep``): the CLI sends them to the workers' queue when a broker is
configured, else runs them in-process (`nightowl.sleeptime.runner.run_jobs`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nightowl.app.root import Nightowl


def contexts_to_learn(app: Nightowl, context: str | None = None) -> list[str]:
    """One context (by id, prefix or name) or every context needing a c', by priority."""
    svc = app.sleep
    if context:
        return [svc.store.get(context).id]
    return [w.context.id for w in svc.plan(measure=svc.probe.check().idle)]


def rebuild_index(app: Nightowl, *, reembed: bool = False) -> dict[str, int]:
    """Rebuild every demo index from SQL (idempotent: SQL is the source of truth)."""
    return app.demo_memory("rebuilding the demo indexes").rebuild(reembed=reembed)
