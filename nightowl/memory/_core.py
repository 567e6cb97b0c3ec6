"""The shared in-process state of one demo memory, and a small thread-safe LRU cache.

`MemoryCore` is what the index-sync, write and retrieval parts of `DemoMemory` share:
the database, the embedder, the settings, the demo map (demo id -> episode, steps),
the three `VectorIndex`es and their dirty flags, the SQL fingerprint last seen, and
the step-record cache. It holds state and the key-text rules; it does no I/O itself.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

from nightowl.memory._index import VectorIndex
from nightowl.memory._records import (
    DemoEntry,
    MemorySettings,
    StepRecord,
    clip,
    goal_template,
    hist_text,
)
from nightowl.memory.embedder import Embedder

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: "never switch to HNSW" for `VectorIndex.hnsw_threshold`
_NEVER = 2**62


class LruCache(Generic[K, V]):
    """A bounded, thread-safe mapping that forgets the least recently used entries."""

    def __init__(self, size: int) -> None:
        """Keep at most ``size`` entries (0 disables the cache)."""
        self.size = size
        self._data: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get_many(self, keys: Iterable[K]) -> tuple[dict[K, V], list[K]]:
        """(found entries, missing keys in the order asked)."""
        found: dict[K, V] = {}
        missing: list[K] = []
        with self._lock:
            for k in keys:
                v = self._data.get(k)
                if v is None:
                    missing.append(k)
                else:
                    self._data.move_to_end(k)
                    found[k] = v
        return found, missing

    def put_many(self, items: Iterable[tuple[K, V]]) -> None:
        """Insert entries, then evict down to ``size``."""
        if self.size <= 0:
            return
        with self._lock:
            for k, v in items:
                self._data[k] = v
                self._data.move_to_end(k)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def forget(self, keys: Iterable[K] | None = None) -> None:
        """Drop ``keys`` (all entries when None)."""
        with self._lock:
            if keys is None:
                self._data.clear()
                return
            for k in keys:
                self._data.pop(k, None)


class MemoryCore:
    """State shared by the parts of one `DemoMemory` (guard mutations with ``lock``)."""

    def __init__(
        self, db: Any, embedder: Embedder, settings: MemorySettings, index_dir: Path
    ) -> None:
        """Hold ``db`` (a `nightowl.storage.Database`), the embedder, settings, index folder."""
        self.db = db
        self.embedder = embedder
        self.settings = settings
        self.index_dir = index_dir
        self.lock = threading.RLock()
        self.demos: dict[int, DemoEntry] = {}
        self.by_episode: dict[str, int] = {}
        self.indexes: dict[str, VectorIndex] = {}
        self.dirty: set[str] = set()
        self.last_save = time.monotonic()
        self.last_refresh = time.monotonic()
        self.fingerprint: tuple[Any, ...] = ()
        self.last_open_report: dict[str, str] = {}
        self.steps: LruCache[int, StepRecord] = LruCache(settings.step_cache_size)

    # --- key texts (the writer, the verifier and the query side must agree) -------------
    def clip(self, text: str) -> str:
        """The text a goal/observation key embeds."""
        return clip(text, self.settings.max_text_chars)

    def goal_key(self, goal: str) -> str:
        """The goal as the keys see it: its template unless ``goal_values="keep"``."""
        return goal_template(goal) if self.settings.goal_values == "mask" else goal

    def goal_text(self, goal: str) -> str:
        """The text the goal key embeds."""
        return self.clip(self.goal_key(goal))

    def hist_text(self, goal: str, previous_actions: Sequence[str]) -> str:
        """The goal+history key text."""
        s = self.settings
        return hist_text(self.goal_key(goal), previous_actions, s.history_len, s.max_text_chars)

    # --- indexes ------------------------------------------------------------------------
    def index_kwargs(self, key: str) -> dict[str, Any]:
        """`VectorIndex` options for ``key`` (the step keys stay flat unless configured)."""
        s = self.settings
        if key == "goal":
            threshold = s.hnsw_threshold
        else:
            threshold = s.step_hnsw_threshold if s.step_hnsw_threshold is not None else _NEVER
        return {
            "hnsw_threshold": threshold,
            "hnsw_m": s.hnsw_m,
            "ef_construction": s.ef_construction,
            "ef_search": s.ef_search,
            "use_gpu": s.use_gpu,
        }
