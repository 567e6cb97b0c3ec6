"""Which contexts need a fresh c', and in what order to precompute them.

Freshness: a context whose current content has no finished c' needs one, but a
context that keeps changing (a live conversation) is not re-thought after every turn:
its stale c' is refreshed once it has changed ``refresh_after_changes`` times since
that c' was written, or once it has been quiet for ``idle_refresh_s`` seconds. A
context that never had a c' always qualifies.

Priority (Lin et al., 2025: the benefit of sleep-time compute grows with how many
queries share a context and how predictable those queries are from it):
``priority = expected_queries * predictability`` where ``expected_queries = 1 + past
query count`` and ``predictability = exp(mean per-token log p(q|c))`` over past
queries, measured with a backend that returns log-probabilities. Contexts without a
measurement get the geometric mean of the measured ones (1.0 when none is measured),
so unmeasured contexts neither jump nor trail the queue.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from nightowl.config_sleep import SleepConfig
from nightowl.llm.base import ModelBackend
from nightowl.sleeptime.schema import utcnow
from nightowl.sleeptime.store import ContextRecord, ContextStore


@dataclass(frozen=True, kw_only=True)
class WorkItem:
    """A context that needs a c', with why and how urgently."""

    context: ContextRecord
    reason: str
    expected_queries: int
    predictability: float
    priority: float


def refresh_reason(
    store: ContextStore, ctx: ContextRecord, settings: SleepConfig, *, now: datetime | None = None
) -> str | None:
    """Why ``ctx`` needs a (new) c' now, or None when it does not."""
    status, learned = store.fresh_learned(ctx)
    if status == "fresh":
        return None
    if status == "missing" or learned is None:
        return "missing"
    changes = ctx.revision - learned.context_revision
    if changes >= settings.refresh_after_changes:
        return f"stale: {changes} changes"
    quiet_s = ((now or utcnow()) - ctx.updated_at).total_seconds()
    if quiet_s >= settings.idle_refresh_s:
        return f"stale: quiet {quiet_s:.0f}s"
    return None


def rank(store: ContextStore, contexts: list[tuple[ContextRecord, str]]) -> list[WorkItem]:
    """Order contexts by expected queries x predictability, highest first."""
    counts = store.query_counts()
    measured = [c.predictability for c, _ in contexts if c.predictability]
    prior = math.exp(sum(math.log(p) for p in measured) / len(measured)) if measured else 1.0
    items = []
    for ctx, reason in contexts:
        expected = 1 + counts.get(ctx.id, 0)
        pred = ctx.predictability if ctx.predictability else prior
        items.append(
            WorkItem(
                context=ctx,
                reason=reason,
                expected_queries=expected,
                predictability=pred,
                priority=expected * pred,
            )
        )
    items.sort(key=lambda w: (-w.priority, w.context.updated_at, w.context.id))
    return items


def needing_refresh(
    store: ContextStore, settings: SleepConfig, *, now: datetime | None = None
) -> list[WorkItem]:
    """Every context that needs a c' now, highest priority first."""
    pending = [
        (ctx, reason)
        for ctx in store.list_contexts()
        if (reason := refresh_reason(store, ctx, settings, now=now)) is not None
    ]
    return rank(store, pending)


async def measure_predictability(
    store: ContextStore, ctx: ContextRecord, scorer: ModelBackend, *, limit: int = 5
) -> float | None:
    """exp(mean per-token log p(q|c)) over the context's recent queries.

    Needs a backend with `score_continuations`; returns None (and stores nothing) when
    the context has no queries yet or the backend cannot score.
    """
    queries = store.recent_queries(ctx.id, limit=limit)
    if not queries:
        return None
    prompt = f"{ctx.content}\n\nA question about the text above:"
    try:
        scored = await scorer.score_continuations(prompt, [" " + q for q in queries])
    except NotImplementedError:
        return None
    tokens = sum(scored.token_counts)
    if tokens <= 0:
        return None
    value = math.exp(sum(scored.logprobs) / tokens)
    store.set_predictability(ctx.id, value)
    return value
