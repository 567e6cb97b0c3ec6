"""Chat demos: accepted teacher replies, retrieved into the student's prompt, per tenant.

A demo is (question, the context it needed, the reply). Rows and their vectors live in
SQL; each tenant gets its own FAISS inner-product index built from its rows only, so a
search can never return another tenant's demo (there is no shared index to filter).
The per-tenant index is a cache, rebuilt when that tenant's row count changed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import faiss
import numpy as np
from sqlalchemy import func, select

from nightowl.chat.tables import ChatDemoRow
from nightowl.chat.threads import utcnow
from nightowl.memory import Embedder
from nightowl.storage import Database

#: context kept with a demo (characters; the tail, where the latest turns are)
MAX_CONTEXT_CHARS = 1500


@dataclass(frozen=True, kw_only=True)
class ChatDemo:
    """One demo and its similarity to the query it was retrieved for."""

    id: int
    tenant: str
    question: str
    context: str
    reply: str
    score: float = 0.0


@dataclass
class _TenantIndex:
    count: int
    index: faiss.IndexFlatIP
    ids: list[int]


class ChatDemoStore:
    """Add and retrieve chat demos, scoped by tenant."""

    def __init__(self, db: Database, embedder: Embedder) -> None:
        self.db = db
        self.embedder = embedder
        self._indexes: dict[str, _TenantIndex] = {}
        self._lock = threading.Lock()

    def add(self, tenant: str, question: str, reply: str, *, context: str = "") -> int:
        """Store a demo; returns its id."""
        vec = self.embedder.embed([question])[0].astype(np.float32)
        row = ChatDemoRow(
            tenant=tenant,
            question=question,
            context=context[-MAX_CONTEXT_CHARS:],
            reply=reply,
            embedder=self.embedder.model_name,
            vector=vec.tobytes(),
            created_at=utcnow(),
        )

        def w(s):  # type: ignore[no-untyped-def]
            s.add(row)
            s.flush()
            return int(row.id)

        return int(self.db.write(w))

    def count(self, tenant: str) -> int:
        """Demos stored for ``tenant``."""
        return int(
            self.db.read(
                lambda s: s.scalar(
                    select(func.count())
                    .select_from(ChatDemoRow)
                    .where(ChatDemoRow.tenant == tenant)
                )
            )
            or 0
        )

    def _index(self, tenant: str) -> _TenantIndex | None:
        n = self.count(tenant)
        with self._lock:
            cached = self._indexes.get(tenant)
            if cached is not None and cached.count == n:
                return cached
        if n == 0:
            return None
        rows = self.db.read(
            lambda s: s.execute(
                select(ChatDemoRow.id, ChatDemoRow.vector).where(
                    ChatDemoRow.tenant == tenant, ChatDemoRow.embedder == self.embedder.model_name
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
            self._indexes[tenant] = built
        return built

    def nearest(
        self, tenant: str, question: str, *, k: int = 2, min_score: float = 0.5
    ) -> list[ChatDemo]:
        """Up to ``k`` of ``tenant``'s demos most similar to ``question`` (cosine >= min)."""
        idx = self._index(tenant)
        if idx is None or k <= 0:
            return []
        q = self.embedder.embed([question]).astype(np.float32)
        scores, pos = idx.index.search(q, min(k, len(idx.ids)))
        hits = {
            idx.ids[p]: float(sc)
            for sc, p in zip(scores[0], pos[0], strict=True)
            if p >= 0 and sc >= min_score
        }
        if not hits:
            return []
        rows = self.db.read(
            lambda s: list(s.scalars(select(ChatDemoRow).where(ChatDemoRow.id.in_(list(hits)))))
        )
        demos = [
            ChatDemo(
                id=r.id,
                tenant=r.tenant,
                question=r.question,
                context=r.context,
                reply=r.reply,
                score=hits[r.id],
            )
            for r in rows
            if r.tenant == tenant
        ]
        return sorted(demos, key=lambda d: -d.score)
