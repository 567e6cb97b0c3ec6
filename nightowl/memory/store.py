"""`DemoMemory`: the SQL + FAISS `DemoStore` (a thin facade over its parts).

* `nightowl.memory._sync` - open, verify against SQL, catch up, rebuild, save indexes;
* `nightowl.memory._reembed` - re-embed stored vectors whose text or model changed;
* `nightowl.memory._writes` - add demo episodes, delete demos;
* `nightowl.memory.steps` - record and read steps (a `SqlStepLog` of the same database);
* `nightowl.memory._retrieval` - embed the query keys (cached), multi-key windows.

They share one `MemoryCore` (state only). SQL is the source of truth; the indexes are
persisted beside the database with manifests and rebuilt from the stored vectors when
they do not verify.
"""

from __future__ import annotations

import atexit
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nightowl.memory._core import MemoryCore
from nightowl.memory._index import index_paths
from nightowl.memory._records import (
    KEYS,
    DemoWindow,
    EpisodeDemo,
    HistoryItem,
    Key,
    MemorySettings,
    MemoryStats,
    StepRecord,
    memory_settings,
)
from nightowl.memory._retrieval import Retriever
from nightowl.memory._sync import IndexSync
from nightowl.memory._writes import DemoWriter
from nightowl.memory.base import DemoStore
from nightowl.memory.embedder import Embedder, build_embedder
from nightowl.memory.schema import DemoRow, DemoStepRow, StepRow
from nightowl.memory.steps import SqlStepLog


class DemoMemory(DemoStore):
    """The demo memory of one database (thread-safe; several processes may share it)."""

    def __init__(
        self,
        db: Any,
        embedder: Embedder | None = None,
        index_dir: str | Path | None = None,
        settings: Any = None,
    ) -> None:
        """Open the memory.

        Args:
            db: a `nightowl.storage.Database` (``.engine``, ``.sessions``, ``.url``).
            embedder: defaults to the sentence-transformers model named in settings.
            index_dir: where ``<key>.faiss`` + manifests live; default ``<db dir>/indexes``
                for SQLite, ``<settings.home>/indexes`` otherwise.
            settings: `MemorySettings`, or nightowl `Settings` (threads/embedder used),
                or None for defaults.
        """
        mem_settings = memory_settings(settings)
        if embedder is None:
            name = getattr(settings, "embedder", None)
            embedder = build_embedder(name, threads=mem_settings.threads)
        folder = Path(index_dir) if index_dir is not None else _default_index_dir(db, settings)
        faiss.omp_set_num_threads(mem_settings.threads)
        self._core = MemoryCore(db, embedder, mem_settings, folder)
        self._sync = IndexSync(self._core)
        self._writer = DemoWriter(self._core, self._sync)
        self._retriever = Retriever(self._core, self._sync)
        self._log = SqlStepLog(db)
        self._sync.open(verify_texts=mem_settings.verify_texts_on_open)
        _LIVE.add(self)

    # --- what callers read --------------------------------------------------------------
    @property
    def db(self) -> Any:
        """The database."""
        return self._core.db

    @property
    def embedder(self) -> Embedder:
        """The embedder of every key."""
        return self._core.embedder

    @property
    def settings(self) -> MemorySettings:
        """The memory's settings."""
        return self._core.settings

    @property
    def index_dir(self) -> Path:
        """Folder of the index files."""
        return self._core.index_dir

    @property
    def last_open_report(self) -> dict[str, str]:
        """What opening (or the last full sync) did per key: loaded, caught up, rebuilt."""
        return self._core.last_open_report

    def __len__(self) -> int:
        return len(self._core.demos)

    # --- writes -------------------------------------------------------------------------
    def record_steps(
        self, episode_id: str, steps: Sequence[StepRecord | dict[str, Any]]
    ) -> list[int]:
        """Save steps of any episode (upsert on (episode_id, idx)); returns their step ids."""
        ids = self._log.record_steps(episode_id, steps)
        self._core.steps.forget(ids)
        return ids

    def record_new_steps(
        self,
        episode_id: str,
        steps: Sequence[StepRecord | dict[str, Any]],
        *,
        within: Any = None,
    ) -> None:
        """Save the steps not recorded yet (see `StepLog.record_new_steps`).

        ``within``: an open `Session` on this memory's database to write in. Recorded
        steps stay as they are, so no cached step goes stale.
        """
        self._log.record_new_steps(episode_id, steps, within=within)

    def episode_steps(self, episode_id: str) -> list[StepRecord]:
        """Every recorded step of an episode, in order (replay/audit)."""
        return self._log.episode_steps(episode_id)

    def add_episodes(self, demos: Sequence[EpisodeDemo]) -> list[int]:
        """`add_episode` for many episodes: one read, one embedding batch, one transaction."""
        return self._writer.add_episodes(demos)

    def delete_run(self, run_id: str) -> int:
        """Delete every demo (and its demo-step vectors) of a run's episodes; returns how many.

        The recorded steps stay (they are the run's audit record); deleting the run in
        the ledger removes them by cascade.
        """
        return self._writer.delete_run(run_id)

    def delete_episode(self, episode_id: str) -> bool:
        """Stop using one episode as a demo (its steps stay recorded)."""
        return self._writer.delete_episode(episode_id)

    # --- reads --------------------------------------------------------------------------
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
        query_vectors: np.ndarray | None = None,
    ) -> list[DemoWindow]:
        """Multi-key retrieval of demo windows (see `DemoStore.retrieve`).

        ``query_vectors`` (the goal, observation and goal+history vectors as rows) skips
        the model.
        """
        return self._retriever.retrieve(
            goal,
            observation,
            history,
            k_episodes,
            k_steps,
            window,
            exclude_task_ids,
            exclude_episode_ids=exclude_episode_ids,
            query_vectors=query_vectors,
        )

    def search(self, key: Key, text: str, k: int = 5) -> list[tuple[int, float]]:
        """Raw top-k (id, score) in one index (demo ids for "goal", step ids otherwise)."""
        return self._retriever.search(key, text, k)

    def stats(self) -> MemoryStats:
        """Counts and index state."""

        def q(s: Session) -> tuple[int, int, int]:
            return (
                int(s.scalar(select(func.count(DemoRow.id))) or 0),
                int(s.scalar(select(func.count(DemoStepRow.step_id))) or 0),
                int(s.scalar(select(func.count(StepRow.id))) or 0),
            )

        c = self._core
        demos, demo_steps, steps = c.db.read(q)
        idx: dict[str, dict[str, Any]] = {}
        for key in KEYS:
            index = c.indexes[key]
            fpath, _ = index_paths(c.index_dir, key)
            idx[key] = {
                "rows": index.ntotal,
                "type": index.index_type,
                "file": str(fpath),
                "saved": key not in c.dirty and fpath.exists(),
                "last_open": c.last_open_report.get(key, ""),
            }
        return MemoryStats(
            demos=demos,
            demo_steps=demo_steps,
            steps=steps,
            embedding_model=c.embedder.model_name,
            dim=c.embedder.dim,
            indexes=idx,
            index_dir=str(c.index_dir),
        )

    # --- index upkeep -------------------------------------------------------------------
    def refresh(self, *, force: bool = False) -> bool:
        """Pick up other processes' writes; True when the indexes changed."""
        return self._sync.refresh(force=force)

    def rebuild(self, *, reembed: bool = False) -> dict[str, int]:
        """Rebuild every index from SQL (re-embedding every text when ``reembed``)."""
        return self._sync.rebuild_all(reembed=reembed)

    def flush(self) -> None:
        """Write dirty indexes and their manifests to ``index_dir``."""
        self._sync.flush()


_LIVE: weakref.WeakSet[DemoMemory] = weakref.WeakSet()


@atexit.register
def _flush_live_memories() -> None:
    """Save unsaved indexes at interpreter exit (they are caches: failures are harmless)."""
    for mem in list(_LIVE):
        try:
            mem.flush()
        except Exception:  # noqa: BLE001, S110 - SQL already holds everything
            pass


def _default_index_dir(db: Any, settings: Any) -> Path:
    url = str(getattr(db, "url", ""))
    if url.startswith("sqlite") and "///" in url:
        path = url.split("///", 1)[1].split("?", 1)[0]
        if path and path != ":memory:":
            return Path(path).resolve().parent / "indexes"
    home = Path(getattr(settings, "home", ".nightowl"))
    return home / "indexes"
