"""Chat demos: accepted teacher replies as a `DemoStore` of one tenant.

A chat demo is a ledger episode of one step: goal = the user's question, step 0's
observation = the conversation before it, its action = the accepted reply. The steps are
recorded like any other (`SqlStepLog`); the demo itself is a ``chat_demos`` row (its
question vector in SQL). Each tenant's store builds a FAISS inner-product index from that
tenant's rows only, so a search can never return another tenant's demo (there is no
shared index to filter). The index is a cache, rebuilt when the tenant's row count
changed or this store wrote. Rows written before demos were episodes (no
``episode_id``) are still retrieved.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nightowl.chat.tables import ChatDemoRow
from nightowl.chat.threads import utcnow
from nightowl.errors import StoreError
from nightowl.ledger import Ledger
from nightowl.ledger.tables import Episode
from nightowl.memory import DemoStore, DemoWindow, Embedder, EpisodeDemo, SqlStepLog, StepRecord
from nightowl.memory._records import HistoryItem, checked_demos
from nightowl.memory.steps import upsert_steps
from nightowl.storage import Database

#: context kept with a demo (characters; the tail, where the latest turns are)
MAX_CONTEXT_CHARS = 1500
#: namespace of the per-tenant ledger run ids (uuid5 of the tenant)
_RUNS = uuid.UUID("6f1d2c0e-3b7a-4f55-9a51-2f0c8f6d9e11")


@dataclass
class _TenantIndex:
    count: int
    index: faiss.IndexFlatIP
    ids: list[int]


class TenantDemoStore(SqlStepLog, DemoStore):
    """The chat demos of one tenant: one step per episode, retrieved by question cosine.

    ``retrieve`` uses ``goal`` (the question) only; each window holds the demo's one
    step, so ``k_steps``, ``window``, ``observation`` and ``history`` change nothing.
    """

    def __init__(
        self, db: Database, embedder: Embedder, tenant: str, *, min_score: float = 0.5
    ) -> None:
        super().__init__(db)
        self.embedder = embedder
        self.tenant = tenant
        self.min_score = min_score
        self._cache: _TenantIndex | None = None
        self._lock = threading.Lock()

    def add_episodes(self, demos: Sequence[EpisodeDemo]) -> list[int]:
        """Record the episodes' steps and keep each as this tenant's demo (replacing)."""
        items = checked_demos(demos)
        if any(not recs for _, recs in items):
            raise ValueError("a chat demo needs a step")
        if not items:
            return []
        vecs = self.embedder.embed([d.goal for d, _ in items]).astype(np.float32)

        def write(s: Session) -> list[int]:
            ep_ids = [d.episode_id for d, _ in items]
            known = set(s.scalars(select(Episode.id).where(Episode.id.in_(ep_ids))))
            if unknown := [e for e in ep_ids if e not in known]:
                raise StoreError(f"unknown episode {unknown[0]!r}: start it in the ledger first")
            ids = []
            for (d, recs), vec in zip(items, vecs, strict=True):
                upsert_steps(s, d.episode_id, recs)
                mine = (ChatDemoRow.tenant == self.tenant, ChatDemoRow.episode_id == d.episode_id)
                row = s.scalar(select(ChatDemoRow).where(*mine)) or ChatDemoRow()
                s.add(row)  # a new row, or the episode's old one updated (same demo id)
                for name, value in {
                    "tenant": self.tenant,
                    "episode_id": d.episode_id,
                    "question": d.goal,
                    "context": recs[0].observation[-MAX_CONTEXT_CHARS:],
                    "reply": recs[0].action,
                    "embedder": self.embedder.model_name,
                    "vector": vec.tobytes(),
                    "created_at": utcnow(),
                }.items():
                    setattr(row, name, value)
                s.flush()
                ids.append(int(row.id))
            return ids

        return self._changed(self.db.write(write))

    def retrieve(
        self,
        goal: str,
        observation: str,
        history: Sequence[HistoryItem] = (),
        k_episodes: int = 4,
        k_steps: int = 2,
        window: int = 2,
        exclude_task_ids: Iterable[str] = (),
        *,
        exclude_episode_ids: Iterable[str] = (),
    ) -> list[DemoWindow]:
        """Up to ``k_episodes`` demos whose question has cosine >= ``min_score`` with ``goal``.

        Ordered by score, then demo id; one window of one step each.
        """
        skip_tasks, skip_eps = set(exclude_task_ids), set(exclude_episode_ids)
        idx = self._index()
        if idx is None or k_episodes <= 0:
            return []
        q = self.embedder.embed([goal]).astype(np.float32)
        n = len(idx.ids) if (skip_tasks or skip_eps) else min(k_episodes, len(idx.ids))
        scores, pos = idx.index.search(q, n)
        hits = {
            idx.ids[p]: float(sc)
            for sc, p in zip(scores[0], pos[0], strict=True)
            if p >= 0 and sc >= self.min_score
        }
        if not hits:
            return []
        rows = self.db.read(
            lambda s: s.execute(
                select(ChatDemoRow, Episode.task_id, Episode.env)
                .outerjoin(Episode, Episode.id == ChatDemoRow.episode_id)
                .where(ChatDemoRow.id.in_(list(hits)), ChatDemoRow.tenant == self.tenant)
            ).all()
        )
        kept = sorted(
            (r for r in rows if r[0].episode_id not in skip_eps and r[1] not in skip_tasks),
            key=lambda r: (-hits[r[0].id], r[0].id),
        )[:k_episodes]
        return [
            DemoWindow(
                demo_id=row.id,
                episode_id=row.episode_id or "",
                task_id=task_id or "",
                env=env or "chat",
                goal=row.question,
                source="chat",
                steps=[StepRecord(idx=0, observation=row.context, action=row.reply)],
                hit_idxs=[0],
                best_idx=0,
                episode_score=hits[row.id],
                step_score=hits[row.id],
                rank=rank,
            )
            for rank, (row, task_id, env) in enumerate(kept)
        ]

    def delete_episode(self, episode_id: str) -> bool:
        """Stop using one episode as this tenant's demo (its steps stay)."""
        return self._delete(ChatDemoRow.episode_id == episode_id) > 0

    def delete_run(self, run_id: str) -> int:
        """Stop using the episodes of a run as this tenant's demos; how many went."""
        return self._delete(
            ChatDemoRow.episode_id.in_(select(Episode.id).where(Episode.run_id == run_id))
        )

    def _delete(self, where: Any) -> int:
        stmt = delete(ChatDemoRow).where(ChatDemoRow.tenant == self.tenant, where)
        return self._changed(int(self.db.write(lambda s: s.execute(stmt).rowcount or 0)))

    def _changed(self, out: Any) -> Any:
        with self._lock:
            self._cache = None
        return out

    def count(self) -> int:
        """Demos stored for this tenant."""
        stmt = (
            select(func.count()).select_from(ChatDemoRow).where(ChatDemoRow.tenant == self.tenant)
        )
        return int(self.db.read(lambda s: s.scalar(stmt)) or 0)

    def _index(self) -> _TenantIndex | None:
        n = self.count()
        with self._lock:
            if self._cache is not None and self._cache.count == n:
                return self._cache
        if n == 0:
            return None
        rows = self.db.read(
            lambda s: s.execute(
                select(ChatDemoRow.id, ChatDemoRow.vector).where(
                    ChatDemoRow.tenant == self.tenant,
                    ChatDemoRow.embedder == self.embedder.model_name,
                )
            ).all()
        )
        if not rows:
            return None
        mat = np.stack([np.frombuffer(v, dtype=np.float32) for _, v in rows])
        index = faiss.IndexFlatIP(mat.shape[1])
        index.add(mat)
        built = _TenantIndex(count=n, index=index, ids=[int(i) for i, _ in rows])
        with self._lock:
            self._cache = built
        return built


class ChatDemos:
    """The assistant's chat demos: a `TenantDemoStore` per tenant, one ledger run each."""

    def __init__(
        self, db: Database, embedder: Embedder, ledger: Ledger, *, min_score: float = 0.5
    ) -> None:
        self.db, self.embedder, self.ledger, self.min_score = db, embedder, ledger, min_score
        self._stores: dict[str, TenantDemoStore] = {}
        self._runs: dict[str, str] = {}
        self._lock = threading.Lock()

    def for_tenant(self, tenant: str) -> TenantDemoStore:
        """The tenant's store (one per tenant, kept)."""
        with self._lock:
            if tenant not in self._stores:
                self._stores[tenant] = TenantDemoStore(
                    self.db, self.embedder, tenant, min_score=self.min_score
                )
            return self._stores[tenant]

    def run_id(self, tenant: str) -> str:
        """The tenant's ledger run of chat demos (``chat:<tenant>``), created on first use."""
        if (rid := self._runs.get(tenant)) is None:
            rid = uuid.uuid5(_RUNS, tenant).hex
            if not self.ledger.run_exists(rid):
                with contextlib.suppress(IntegrityError):  # another process created it first
                    self.ledger.start_run(f"chat:{tenant}", kind="chat", run_id=rid)
            self._runs[tenant] = rid
        return rid

    def keep(
        self, tenant: str, question: str, reply: str, *, context: str = "", task_id: str = ""
    ) -> int:
        """Record an accepted reply as a one-step episode and the tenant's demo; demo id."""
        eid = self.ledger.start_episode(self.run_id(tenant), task_id, env="chat")
        step = StepRecord(idx=0, observation=context, action=reply, done=True)
        demo_id = self.for_tenant(tenant).add_episode(eid, question, [step], source="chat")
        self.ledger.finish_episode(eid, success=True, n_steps=1)
        return demo_id
