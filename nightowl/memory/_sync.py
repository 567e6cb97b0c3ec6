"""Keeping the FAISS indexes in agreement with SQL: open, verify, catch up, rebuild, save.

SQL is the source of truth; an index file is trusted only when its manifest verifies
and its (id, text hash) checksum equals SQL's. A verified index that is a prefix of SQL
(another process added rows and did not save) is caught up from the stored vectors;
anything else is rebuilt from SQL without running the model. Changes made by other
processes are noticed through a cheap fingerprint (counts and max ids) of the demo
tables.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nightowl.memory._core import MemoryCore
from nightowl.memory._index import (
    IndexManifest,
    VectorIndex,
    load_index,
    rows_checksum,
    save_index,
)
from nightowl.memory._records import KEYS, DemoEntry
from nightowl.memory._reembed import reembed_stale
from nightowl.memory.schema import IN_CHUNK, DemoRow, DemoStepRow, StepRow

log = logging.getLogger(__name__)

#: key -> (id, text sha, vector, embedding model) columns of its rows in SQL
_COLUMNS: dict[str, tuple[Any, Any, Any, Any]] = {
    "goal": (DemoRow.id, DemoRow.goal_sha, DemoRow.goal_vec, DemoRow.embed_model),
    "obs": (DemoStepRow.step_id, DemoStepRow.obs_sha, DemoStepRow.obs_vec, DemoStepRow.embed_model),
    "hist": (
        DemoStepRow.step_id, DemoStepRow.hist_sha, DemoStepRow.hist_vec, DemoStepRow.embed_model
    ),
}


class IndexSync:
    """Open, verify, refresh, rebuild and save the indexes of one `MemoryCore`."""

    def __init__(self, core: MemoryCore) -> None:
        """Work on ``core``'s indexes and demo map."""
        self.core = core

    # --- open -------------------------------------------------------------------------
    def open(self, *, verify_texts: bool) -> None:
        """Load (or rebuild) every index and the demo map; re-embed changed texts first."""
        c = self.core
        with c.lock:
            if verify_texts:
                reembed_stale(c)
            self.load_demo_map()
            c.last_open_report = {key: self.sync_index(key) for key in KEYS}
            c.fingerprint = self.sql_fingerprint()
            c.last_refresh = time.monotonic()
            if c.dirty:
                self.flush()

    def load_demo_map(self) -> None:
        """Read demo ids, their episodes and their ordered step ids from SQL."""

        def q(s: Session) -> tuple[list[Any], list[Any]]:
            # the columns in `DemoEntry`'s field order
            demos = s.execute(
                select(
                    DemoRow.id,
                    DemoRow.episode_id,
                    DemoRow.task_id,
                    DemoRow.env,
                    DemoRow.goal,
                    DemoRow.source,
                )
            ).all()
            steps = s.execute(
                select(DemoStepRow.demo_id, DemoStepRow.step_id)
                .join(StepRow, StepRow.id == DemoStepRow.step_id)
                .order_by(DemoStepRow.demo_id, StepRow.idx)
            ).all()
            return list(demos), list(steps)

        demos, steps = self.core.db.read(q)
        by_id = {d.id: DemoEntry(*d) for d in demos}
        for demo_id, step_id in steps:
            entry = by_id.get(demo_id)
            if entry is not None:
                entry.step_ids.append(int(step_id))
        self.core.demos = by_id
        self.core.by_episode = {d.episode_id: d.demo_id for d in by_id.values()}

    # --- SQL side of an index ------------------------------------------------------------
    def sql_rows(self, key: str) -> list[tuple[int, str]]:
        """(id, text sha) of the rows that belong in ``key``'s index."""
        col, sha, _, model_col = _COLUMNS[key]
        stmt = select(col, sha).where(model_col == self.core.embedder.model_name)
        return self.core.db.read(lambda s: [(int(a), str(b)) for a, b in s.execute(stmt)])

    def sql_vectors(self, key: str, ids: Sequence[int] | None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) stored in SQL for ``key`` (all when ``ids`` is None), by id."""
        dim = self.core.embedder.dim
        col, _, vec, model_col = _COLUMNS[key]
        stmt = select(col, vec).where(model_col == self.core.embedder.model_name)

        def q(s: Session) -> tuple[list[int], list[bytes]]:
            got_ids: list[int] = []
            blobs: list[bytes] = []

            def take(rows: Any) -> None:
                for a, b in rows:
                    # a missing or wrong-size vector is re-embedded at the next open
                    if b is not None and len(b) == dim * 4:
                        got_ids.append(int(a))
                        blobs.append(bytes(b))

            if ids is None:
                take(s.execute(stmt))
            else:
                id_list = list(ids)
                for i in range(0, len(id_list), IN_CHUNK):
                    take(s.execute(stmt.where(col.in_(id_list[i : i + IN_CHUNK]))))
            return got_ids, blobs

        got_ids, blobs = self.core.db.read(q)
        if not got_ids:
            return np.zeros(0, np.int64), np.zeros((0, dim), np.float32)
        arr_ids = np.asarray(got_ids, dtype=np.int64)
        vecs = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(-1, dim)
        order = np.argsort(arr_ids, kind="stable")
        return arr_ids[order], np.ascontiguousarray(vecs[order])

    # --- verify and rebuild --------------------------------------------------------------
    def sync_index(self, key: str) -> str:
        """Make ``core.indexes[key]`` agree with SQL; returns what was done."""
        c = self.core
        sql_rows = self.sql_rows(key)
        want = rows_checksum(sql_rows)
        loaded, info = load_index(
            c.index_dir,
            key,
            embedding_model=c.embedder.model_name,
            dim=c.embedder.dim,
            **c.index_kwargs(key),
        )
        if loaded is not None:
            assert isinstance(info, IndexManifest)
            if info.id_checksum == want:
                c.indexes[key] = loaded
                return "loaded"
            # Stale: keep it when it is a verified prefix of SQL (another writer added rows).
            have = set(int(i) for i in loaded.ids())
            sql_map = dict(sql_rows)
            if have.issubset(sql_map) and info.id_checksum == rows_checksum(
                (i, sql_map[i]) for i in have
            ):
                missing = sorted(set(sql_map) - have)
                ids, vecs = self.sql_vectors(key, missing)
                loaded.add(ids, vecs)
                c.indexes[key] = loaded
                c.dirty.add(key)
                return f"caught up (+{len(ids)})"
            reason = "stale (content differs from SQL)"
        else:
            reason = str(info)
        self.rebuild_key(key)
        if sql_rows or reason != "manifest missing":
            log.warning("memory index %r rebuilt from SQL: %s", key, reason)
        return f"rebuilt ({reason})"

    def rebuild_key(self, key: str) -> None:
        """Replace ``key``'s index with one built from the vectors stored in SQL."""
        c = self.core
        index = VectorIndex(c.embedder.dim, **c.index_kwargs(key))
        ids, vecs = self.sql_vectors(key, None)
        index.add(ids, vecs)
        c.indexes[key] = index
        c.dirty.add(key)

    def rebuild_all(self, *, reembed: bool = False) -> dict[str, int]:
        """Rebuild every index from SQL (re-embedding every text when ``reembed``)."""
        c = self.core
        with c.lock:
            reembed_stale(c, force=reembed)
            c.steps.forget()
            self.load_demo_map()
            for key in KEYS:
                self.rebuild_key(key)
            self.flush()
            c.fingerprint = self.sql_fingerprint()
            return {key: c.indexes[key].ntotal for key in KEYS}

    # --- other processes' writes ---------------------------------------------------------
    def sql_fingerprint(self) -> tuple[Any, ...]:
        """Counts and max ids of ``demos`` and ``demo_steps``: changes when anyone writes."""

        def q(s: Session) -> tuple[Any, ...]:
            a = s.execute(select(func.count(DemoRow.id), func.max(DemoRow.id))).one()
            b = s.execute(
                select(func.count(DemoStepRow.step_id), func.max(DemoStepRow.step_id))
            ).one()
            return (a[0], a[1], b[0], b[1])

        return self.core.db.read(q)

    def bump_fingerprint(
        self, *, replaced: bool, demo_id: int, step_ids: list[int], old_steps: list[int]
    ) -> None:
        """Account for our own write without a COUNT over the tables.

        If another process wrote in between, SQL's fingerprint differs from this one and
        the next `refresh` catches up.
        """
        c = self.core
        nd, md, ns, ms = c.fingerprint
        nd = (nd or 0) + (0 if replaced else 1)
        md = max(md or 0, demo_id)
        ns = (ns or 0) + len(step_ids) - len(old_steps)
        ms = max([ms or 0, *step_ids]) if step_ids else ms
        c.fingerprint = (nd, md, ns, ms)

    def refresh(self, *, force: bool = False) -> bool:
        """Pick up other processes' writes; True when the indexes changed."""
        c = self.core
        with c.lock:
            fp = self.sql_fingerprint()
            if fp == c.fingerprint and not force:
                c.last_refresh = time.monotonic()
                return False
            self.load_demo_map()
            for key in KEYS:
                self.catch_up(key)
            c.steps.forget()
            c.fingerprint = fp
            c.last_refresh = time.monotonic()
            self.maybe_save()
            return True

    def catch_up(self, key: str) -> None:
        """Remove ids SQL no longer has and add the ones it gained (rebuild if HNSW)."""
        c = self.core
        index = c.indexes[key]
        sql_ids = {i for i, _ in self.sql_rows(key)}
        have = set(int(i) for i in index.ids())
        gone = have - sql_ids
        if gone and not index.remove(sorted(gone)):
            self.rebuild_key(key)
            return
        missing = sorted(sql_ids - have)
        if missing:
            ids, vecs = self.sql_vectors(key, missing)
            index.add(ids, vecs)
        if gone or missing:
            c.dirty.add(key)

    # --- persistence -----------------------------------------------------------------------
    def maybe_save(self) -> None:
        """Save dirty indexes if the last save is older than ``save_interval_s``."""
        if time.monotonic() - self.core.last_save >= self.core.settings.save_interval_s:
            self.flush()

    def flush(self) -> None:
        """Write dirty indexes and their manifests to ``index_dir``."""
        c = self.core
        with c.lock:
            for key in sorted(c.dirty):
                index = c.indexes[key]
                ids = set(int(i) for i in index.ids())
                checksum = rows_checksum(r for r in self.sql_rows(key) if r[0] in ids)
                try:
                    save_index(
                        index,
                        c.index_dir,
                        key,
                        embedding_model=c.embedder.model_name,
                        id_checksum=checksum,
                    )
                except OSError as exc:  # the SQL rows are safe; the index is a cache
                    log.warning("memory: cannot save index %r: %s", key, exc)
                    continue
                c.dirty.discard(key)
            c.last_save = time.monotonic()
