"""`DemoMemory`: SQL-backed demo store with FAISS indexes and multi-key retrieval.

Write path: `record_steps` saves any episode's steps (the audit/replay record);
`add_episode` additionally marks an episode as a demo: it embeds the goal, each step's
observation and each step's goal+history text in batches, stores the vectors in SQL
(`nightowl.memory.schema`) and adds them to the three in-process indexes
(``goal``, ``obs``, ``hist``) incrementally.

Read path (`retrieve`): embed the query's goal, observation and goal+history in one
batch; take the top ``k_episodes`` demo episodes by goal similarity (skipping excluded
task ids); inside each of them score every demo step exactly by
``w_obs * cos(observation) + w_hist * cos(goal+history)`` using the vectors kept in the
step indexes; take the best ``k_steps`` steps per episode, cut windows of ``window``
steps either side, merge overlapping windows, drop exact duplicates (same actions and
observations), and return `DemoWindow`s ordered by episode rank, then step index.

SQL is the source of truth. Indexes are persisted beside the database with manifests;
on open (and on `refresh`) they are verified against SQL and rebuilt (without the
model, from the stored vectors) when missing, corrupt or stale; stored vectors whose
text changed or whose model differs are re-embedded first.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy import text as sql_text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from nightowl.errors import StoreError
from nightowl.memory.embedder import Embedder, build_embedder
from nightowl.memory.index import (
    IndexManifest,
    VectorIndex,
    index_paths,
    load_index,
    rows_checksum,
    save_index,
)
from nightowl.memory.schema import DemoRow, DemoStepRow, StepRow, utcnow

log = logging.getLogger(__name__)

KEYS = ("goal", "obs", "hist")
Key = Literal["goal", "obs", "hist"]


class MemorySettings(BaseModel):
    """Knobs of the demo memory (defaults are what the demo and benchmarks use)."""

    model_config = ConfigDict(extra="forbid")

    threads: int = Field(default=1, ge=1, description="faiss OpenMP threads")
    hnsw_threshold: int = Field(
        default=20_000, ge=1, description="rows above which an index is HNSW"
    )
    hnsw_m: int = Field(default=32, ge=4)
    ef_construction: int = Field(default=64, ge=8)
    ef_search: int = Field(default=64, ge=8)
    history_len: int = Field(
        default=4, ge=0, description="previous actions in the goal+history key"
    )
    max_text_chars: int = Field(
        default=1000, ge=50, description="texts are cut to this before embedding"
    )
    w_obs: float = Field(default=1.0, ge=0, description="weight of observation similarity per step")
    w_hist: float = Field(
        default=0.5, ge=0, description="weight of goal+history similarity per step"
    )
    save_interval_s: float = Field(
        default=30.0,
        ge=0,
        description="indexes are saved after a write at most this often (and on close)",
    )
    refresh_interval_s: float | None = Field(
        default=5.0,
        ge=0,
        description="retrieve checks SQL for other processes' writes at most this often "
        "(0: every call; None: never, call refresh() yourself)",
    )
    step_cache_size: int = Field(
        default=20_000, ge=0, description="retrieved step records kept in memory (LRU)"
    )
    use_gpu: bool | Literal["auto"] = "auto"


class StepRecord(BaseModel):
    """One step: what was observed, what was done, by whom. ``id`` is set when read back.

    Unknown keys are ignored, so plain dicts from other modules validate too.
    """

    model_config = ConfigDict(extra="ignore")

    idx: int
    observation: str
    action: str
    reasoning: str | None = None
    reward: float = 0.0
    score: float | None = None
    done: bool = False
    actor: str = "teacher"
    valid_actions: list[str] | None = None
    meta: dict[str, Any] | None = None
    id: int | None = None


class EpisodeDemo(BaseModel):
    """One episode to store as a demo (the argument of `DemoMemory.add_episodes`)."""

    model_config = ConfigDict(extra="forbid")

    episode_id: str
    goal: str
    steps: list[StepRecord]
    source: str = "collect"
    env: str | None = None
    task_id: str | None = None


class DemoWindow(BaseModel):
    """A contiguous run of a demo episode's steps around one or more retrieved steps."""

    demo_id: int
    episode_id: str
    task_id: str
    env: str
    goal: str
    source: str
    steps: list[StepRecord]
    hit_idxs: list[int] = Field(description="step idx values that matched the query")
    episode_score: float = Field(description="cosine of the goals")
    step_score: float = Field(description="best w_obs*cos(obs) + w_hist*cos(goal+history)")
    rank: int = Field(description="episode rank by goal similarity (0 = best)")

    @property
    def start_idx(self) -> int:
        """First step idx in the window."""
        return self.steps[0].idx if self.steps else 0

    @property
    def end_idx(self) -> int:
        """Last step idx in the window."""
        return self.steps[-1].idx if self.steps else 0


class MemoryStats(BaseModel):
    """Counts and index state."""

    demos: int
    demo_steps: int
    steps: int
    embedding_model: str
    dim: int
    indexes: dict[str, dict[str, Any]]
    index_dir: str


def sha1(text: str) -> str:
    """Hash of an embedded text (stored beside its vector)."""
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


def _vec_bytes(v: np.ndarray) -> bytes:
    return np.asarray(v, dtype=np.float32).tobytes()


def _vec_from(b: bytes | None, dim: int) -> np.ndarray | None:
    if b is None or len(b) != dim * 4:
        return None
    return np.frombuffer(b, dtype=np.float32)


@dataclass
class _Demo:
    demo_id: int
    episode_id: str
    task_id: str
    env: str
    goal: str
    source: str
    step_ids: list[int] = field(default_factory=list)  # ordered by step idx


#: an earlier step of the current episode: (observation, action), or just the action
HistoryItem = tuple[str, str] | Sequence[str] | str


def as_step_records(steps: Iterable[Any]) -> list[StepRecord]:
    """Coerce StepRecords, dicts or objects with the same attributes."""
    out: list[StepRecord] = []
    for i, st in enumerate(steps):
        if isinstance(st, StepRecord):
            out.append(st)
        elif isinstance(st, dict):
            out.append(StepRecord.model_validate({"idx": i, **st}))
        else:
            out.append(StepRecord.model_validate(st, from_attributes=True))
    return out


class DemoMemory:
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
        self.db = db
        self.settings = _memory_settings(settings)
        if embedder is None:
            name = getattr(settings, "embedder", None)
            embedder = build_embedder(name, threads=self.settings.threads)
        self.embedder = embedder
        self.index_dir = (
            Path(index_dir) if index_dir is not None else _default_index_dir(db, settings)
        )
        faiss.omp_set_num_threads(self.settings.threads)
        self._lock = threading.RLock()
        self._demos: dict[int, _Demo] = {}
        self._by_episode: dict[str, int] = {}
        self._indexes: dict[str, VectorIndex] = {}
        self._dirty: set[str] = set()
        self._last_save = time.monotonic()
        self._last_refresh = time.monotonic()
        self._fingerprint: tuple[Any, ...] = ()
        self.last_open_report: dict[str, str] = {}
        self._step_cache: OrderedDict[int, StepRecord] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._open(verify_texts=True)
        _LIVE.add(self)

    # ==================================================================================
    # opening, verification, rebuild
    # ==================================================================================
    def _new_index(self) -> VectorIndex:
        s = self.settings
        return VectorIndex(
            self.embedder.dim,
            hnsw_threshold=s.hnsw_threshold,
            hnsw_m=s.hnsw_m,
            ef_construction=s.ef_construction,
            ef_search=s.ef_search,
            use_gpu=s.use_gpu,
        )

    def _index_kwargs(self) -> dict[str, Any]:
        s = self.settings
        return {
            "hnsw_threshold": s.hnsw_threshold,
            "hnsw_m": s.hnsw_m,
            "ef_construction": s.ef_construction,
            "ef_search": s.ef_search,
            "use_gpu": s.use_gpu,
        }

    def _open(self, *, verify_texts: bool) -> None:
        with self._lock:
            if verify_texts:
                self._reembed_stale()
            self._load_demo_map()
            report: dict[str, str] = {}
            for key in KEYS:
                report[key] = self._sync_index(key)
            self.last_open_report = report
            self._fingerprint = self._sql_fingerprint()
            self._last_refresh = time.monotonic()
            if self._dirty:
                self.flush()

    def _load_demo_map(self) -> None:
        def q(s: Session) -> tuple[list[Any], list[Any]]:
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

        demos, steps = self.db.read(q)
        self._demos = {
            d.id: _Demo(d.id, d.episode_id, d.task_id, d.env, d.goal, d.source) for d in demos
        }
        self._by_episode = {d.episode_id: d.demo_id for d in self._demos.values()}
        for demo_id, step_id in steps:
            if demo_id in self._demos:
                self._demos[demo_id].step_ids.append(step_id)

    def _sql_rows(self, key: str) -> list[tuple[int, str]]:
        """(id, text sha) of the rows that belong in ``key``'s index."""
        model = self.embedder.model_name

        def q(s: Session) -> list[tuple[int, str]]:
            if key == "goal":
                stmt = select(DemoRow.id, DemoRow.goal_sha).where(DemoRow.embed_model == model)
            elif key == "obs":
                stmt = select(DemoStepRow.step_id, DemoStepRow.obs_sha).where(
                    DemoStepRow.embed_model == model
                )
            else:
                stmt = select(DemoStepRow.step_id, DemoStepRow.hist_sha).where(
                    DemoStepRow.embed_model == model
                )
            return [(int(a), str(b)) for a, b in s.execute(stmt).all()]

        return self.db.read(q)

    def _sql_vectors(self, key: str, ids: Sequence[int] | None) -> tuple[np.ndarray, np.ndarray]:
        dim = self.embedder.dim
        model = self.embedder.model_name

        def q(s: Session) -> list[tuple[int, bytes | None]]:
            if key == "goal":
                stmt = select(DemoRow.id, DemoRow.goal_vec).where(DemoRow.embed_model == model)
                col = DemoRow.id
            else:
                vec = DemoStepRow.obs_vec if key == "obs" else DemoStepRow.hist_vec
                stmt = select(DemoStepRow.step_id, vec).where(DemoStepRow.embed_model == model)
                col = DemoStepRow.step_id
            out: list[tuple[int, bytes | None]] = []
            if ids is None:
                out.extend((int(a), b) for a, b in s.execute(stmt).all())
            else:
                id_list = list(ids)
                for i in range(0, len(id_list), 900):
                    chunk = id_list[i : i + 900]
                    out.extend((int(a), b) for a, b in s.execute(stmt.where(col.in_(chunk))).all())
            return out

        rows = self.db.read(q)
        good: list[tuple[int, np.ndarray]] = []
        for i, b in rows:
            v = _vec_from(b, dim)
            if v is not None:
                good.append((i, v))
        if not good:
            return np.zeros(0, np.int64), np.zeros((0, dim), np.float32)
        good.sort(key=lambda t: t[0])
        return (
            np.array([i for i, _ in good], dtype=np.int64),
            np.stack([v for _, v in good]).astype(np.float32),
        )

    def _sync_index(self, key: str) -> str:
        """Make ``self._indexes[key]`` agree with SQL; returns what was done."""
        sql_rows = self._sql_rows(key)
        want = rows_checksum(sql_rows)
        loaded, info = load_index(
            self.index_dir,
            key,
            embedding_model=self.embedder.model_name,
            dim=self.embedder.dim,
            **self._index_kwargs(),
        )
        if loaded is not None:
            assert isinstance(info, IndexManifest)
            if info.id_checksum == want:
                self._indexes[key] = loaded
                return "loaded"
            # Stale: keep it when it is a verified prefix of SQL (another writer added rows).
            have = set(int(i) for i in loaded.ids())
            sql_map = dict(sql_rows)
            if have.issubset(sql_map) and info.id_checksum == rows_checksum(
                (i, sql_map[i]) for i in have
            ):
                missing = sorted(set(sql_map) - have)
                ids, vecs = self._sql_vectors(key, missing)
                loaded.add(ids, vecs)
                self._indexes[key] = loaded
                self._dirty.add(key)
                return f"caught up (+{len(ids)})"
            reason = "stale (content differs from SQL)"
        else:
            reason = str(info)
        self._rebuild_key(key)
        if sql_rows or reason != "manifest missing":
            log.warning("memory index %r rebuilt from SQL: %s", key, reason)
        return f"rebuilt ({reason})"

    def _rebuild_key(self, key: str) -> None:
        index = self._new_index()
        ids, vecs = self._sql_vectors(key, None)
        index.add(ids, vecs)
        self._indexes[key] = index
        self._dirty.add(key)

    def rebuild(self, *, reembed: bool = False) -> dict[str, int]:
        """Rebuild every index from SQL (re-embedding every text when ``reembed``)."""
        with self._lock:
            self._reembed_stale(force=reembed)
            self._forget_cached_steps()
            self._load_demo_map()
            for key in KEYS:
                self._rebuild_key(key)
            self.flush()
            self._fingerprint = self._sql_fingerprint()
            return {key: self._indexes[key].ntotal for key in KEYS}

    def _reembed_stale(self, *, force: bool = False) -> int:
        """Re-embed stored vectors whose text changed, whose model differs, or that are absent."""
        model = self.embedder.model_name
        dim = self.embedder.dim

        def q(s: Session) -> tuple[list[Any], list[Any], dict[str, list[tuple[int, str]]]]:
            actions: dict[str, list[tuple[int, str]]] = {}
            for ep, idx, act in s.execute(
                select(StepRow.episode_id, StepRow.idx, StepRow.action)
                .where(StepRow.episode_id.in_(select(DemoRow.episode_id)))
                .order_by(StepRow.episode_id, StepRow.idx)
            ):
                actions.setdefault(ep, []).append((int(idx), str(act)))
            demos = s.execute(
                select(
                    DemoRow.id,
                    DemoRow.goal,
                    DemoRow.goal_sha,
                    DemoRow.embed_model,
                    func.length(DemoRow.goal_vec),
                )
            ).all()
            steps = s.execute(
                select(
                    DemoStepRow.step_id,
                    DemoStepRow.demo_id,
                    DemoStepRow.obs_sha,
                    DemoStepRow.hist_sha,
                    DemoStepRow.embed_model,
                    func.length(DemoStepRow.obs_vec),
                    func.length(DemoStepRow.hist_vec),
                    StepRow.episode_id,
                    StepRow.idx,
                    StepRow.observation,
                ).join(StepRow, StepRow.id == DemoStepRow.step_id)
            ).all()
            return list(demos), list(steps), actions

        demos, steps, hist_cache = self.db.read(q)
        goals = {d.id: d.goal for d in demos}
        bad_demos = [
            d
            for d in demos
            if force
            or d.embed_model != model
            or d[4] != dim * 4
            or d.goal_sha != sha1(self._clip(d.goal))
        ]
        bad_steps: list[Any] = []
        for row in steps:
            obs_text = self._clip(row.observation)
            stale = force or row.embed_model != model or row[5] != dim * 4 or row[6] != dim * 4
            stale = stale or row.obs_sha != sha1(obs_text)
            if not stale:
                # The goal+history text depends on the episode's earlier actions.
                hist_text = self._hist_text_for(
                    goals.get(row.demo_id, ""), row.episode_id, row.idx, hist_cache
                )
                stale = row.hist_sha != sha1(hist_text)
            if stale:
                bad_steps.append(row)
        if not bad_demos and not bad_steps:
            return 0
        log.warning(
            "memory: re-embedding %d goals and %d steps (changed text or model)",
            len(bad_demos),
            len(bad_steps),
        )
        goal_texts = [self._clip(d.goal) for d in bad_demos]
        goal_vecs = self.embedder.embed(goal_texts)
        obs_texts = [self._clip(r.observation) for r in bad_steps]
        hist_texts = [
            self._hist_text_for(goals.get(r.demo_id, ""), r.episode_id, r.idx, hist_cache)
            for r in bad_steps
        ]
        vecs = self._embed_batched(obs_texts + hist_texts)
        obs_vecs, hist_vecs = vecs[: len(obs_texts)], vecs[len(obs_texts) :]

        def w(s: Session) -> None:
            for d, t, v in zip(bad_demos, goal_texts, goal_vecs, strict=True):
                row = s.get(DemoRow, d.id)
                if row is not None:
                    row.goal_sha, row.goal_vec, row.embed_model = sha1(t), _vec_bytes(v), model
            for r, ot, ov, ht, hv in zip(
                bad_steps, obs_texts, obs_vecs, hist_texts, hist_vecs, strict=True
            ):
                srow = s.get(DemoStepRow, r.step_id)
                if srow is not None:
                    srow.obs_sha, srow.obs_vec = sha1(ot), _vec_bytes(ov)
                    srow.hist_sha, srow.hist_vec = sha1(ht), _vec_bytes(hv)
                    srow.embed_model = model

        self.db.write(w)
        return len(bad_demos) + len(bad_steps)

    def _hist_text_for(
        self, goal: str, episode_id: str, idx: int, cache: dict[str, list[tuple[int, str]]]
    ) -> str:
        if episode_id not in cache:

            def q(s: Session) -> list[tuple[int, str]]:
                rows = s.execute(
                    select(StepRow.idx, StepRow.action)
                    .where(StepRow.episode_id == episode_id)
                    .order_by(StepRow.idx)
                ).all()
                return [(int(a), str(b)) for a, b in rows]

            cache[episode_id] = self.db.read(q)
        prev = [a for i, a in cache[episode_id] if i < idx]
        return self.hist_text(goal, prev)

    # ==================================================================================
    # texts
    # ==================================================================================
    def _clip(self, text: str) -> str:
        return (text or "").strip()[: self.settings.max_text_chars]

    def hist_text(self, goal: str, previous_actions: Sequence[str]) -> str:
        """The goal+history key text: the goal and the last ``history_len`` actions."""
        h = self.settings.history_len
        recent = [a.strip() for a in previous_actions][-h:] if h else []
        text = f"Goal: {goal.strip()}\nDone so far: " + (
            " ; ".join(recent) if recent else "(start)"
        )
        return self._clip(text)

    def _embed_batched(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.embedder.dim), np.float32)
        return self.embedder.embed(texts)

    # ==================================================================================
    # writing
    # ==================================================================================
    def record_steps(
        self, episode_id: str, steps: Sequence[StepRecord | dict[str, Any]]
    ) -> list[int]:
        """Save steps of any episode (upsert on (episode_id, idx)); returns their step ids."""
        recs = as_step_records(steps)
        ids = self.db.write(lambda s: self._upsert_steps(s, episode_id, recs))
        self._forget_cached_steps(ids)
        return ids

    def record_step(self, episode_id: str, step: StepRecord) -> int:
        """Save one step; returns its id."""
        return self.record_steps(episode_id, [step])[0]

    @staticmethod
    def _upsert_steps(s: Session, episode_id: str, steps: Sequence[StepRecord]) -> list[int]:
        """Insert or update steps by (episode_id, idx) with bulk statements; ids in order."""
        if not steps:
            return []
        existing: dict[int, int] = {}
        idxs = [st.idx for st in steps]
        for i in range(0, len(idxs), 900):
            for sid, idx in s.execute(
                select(StepRow.id, StepRow.idx).where(
                    StepRow.episode_id == episode_id, StepRow.idx.in_(idxs[i : i + 900])
                )
            ):
                existing[int(idx)] = int(sid)
        now = utcnow()

        def values(st: StepRecord) -> dict[str, Any]:
            return {
                "observation": st.observation,
                "action": st.action,
                "reasoning": st.reasoning,
                "reward": float(st.reward),
                "score": st.score,
                "done": bool(st.done),
                "actor": st.actor,
                "valid_actions": list(st.valid_actions) if st.valid_actions is not None else None,
                "meta": dict(st.meta) if st.meta is not None else None,
            }

        updates = [{"id": existing[st.idx], **values(st)} for st in steps if st.idx in existing]
        if updates:
            s.execute(update(StepRow), updates)
        new = [
            {"episode_id": episode_id, "idx": st.idx, "created_at": now, **values(st)}
            for st in steps
            if st.idx not in existing
        ]
        if new:
            rows = s.execute(
                insert(StepRow).returning(StepRow.id, StepRow.idx, sort_by_parameter_order=True),
                new,
            )
            for sid, idx in rows:
                existing[int(idx)] = int(sid)
        return [existing[st.idx] for st in steps]

    def episode_steps(self, episode_id: str) -> list[StepRecord]:
        """Every recorded step of an episode, in order (replay/audit)."""

        def q(s: Session) -> list[StepRecord]:
            rows = s.scalars(
                select(StepRow).where(StepRow.episode_id == episode_id).order_by(StepRow.idx)
            ).all()
            return [_record(r) for r in rows]

        return self.db.read(q)

    def add_episode(
        self,
        episode_id: str,
        goal: str,
        steps: Sequence[StepRecord | dict[str, Any]],
        source: str = "collect",
        *,
        env: str | None = None,
        task_id: str | None = None,
    ) -> int:
        """Store an episode's steps and make it a demo; returns the demo id.

        ``steps`` are upserted (already-recorded steps are reused), embedded in batches
        and added to the indexes. Adding an episode that is already a demo replaces its
        demo steps. ``env``/``task_id`` default to the episode's row in ``episodes``.
        Raises `StoreError` (and stores nothing) for an episode the ledger does not know.
        """
        return self.add_episodes(
            [
                EpisodeDemo(
                    episode_id=episode_id,
                    goal=goal,
                    steps=as_step_records(steps),
                    source=source,
                    env=env,
                    task_id=task_id,
                )
            ]
        )[0]

    def add_episodes(self, demos: Sequence[EpisodeDemo]) -> list[int]:
        """`add_episode` for many episodes: one read, one embedding batch, one transaction."""
        items = []
        for d in demos:
            recs = sorted(d.steps, key=lambda st: st.idx)
            if len({st.idx for st in recs}) != len(recs):
                raise ValueError(f"steps of episode {d.episode_id!r} repeat an idx")
            items.append((d, recs))
        if not items:
            return []
        if len({d.episode_id for d, _ in items}) != len(items):
            raise ValueError("an episode appears twice")
        ep_ids = [d.episode_id for d, _ in items]

        def read(s: Session) -> tuple[dict[str, Any], dict[str, list[tuple[int, str]]]]:
            eps: dict[str, Any] = {}
            prior: dict[str, list[tuple[int, str]]] = {e: [] for e in ep_ids}
            for i in range(0, len(ep_ids), 500):
                chunk = ep_ids[i : i + 500]
                for row in s.execute(
                    sql_text("SELECT id, task_id, env FROM episodes WHERE id IN :ids").bindparams(
                        bindparam("ids", expanding=True)
                    ),
                    {"ids": chunk},
                ):
                    eps[row.id] = row
                for e, idx, act in s.execute(
                    select(StepRow.episode_id, StepRow.idx, StepRow.action).where(
                        StepRow.episode_id.in_(chunk)
                    )
                ):
                    prior[e].append((int(idx), str(act)))
            return eps, prior

        # Embed before writing: the model never runs inside a write transaction.
        eps, prior = self.db.read(read)
        unknown = [e for e in ep_ids if e not in eps]
        if unknown:
            raise StoreError(f"unknown episode {unknown[0]!r}: start it in the ledger first")
        texts: list[str] = []
        plans = []
        for d, recs in items:
            recorded = dict(prior[d.episode_id])
            recorded.update({st.idx: st.action for st in recs})
            actions = sorted(recorded.items())
            obs_texts = [self._clip(st.observation) for st in recs]
            hist_texts = [
                self.hist_text(d.goal, [a for i, a in actions if i < st.idx]) for st in recs
            ]
            start = len(texts)
            texts.extend([self._clip(d.goal), *obs_texts, *hist_texts])
            plans.append((start, obs_texts, hist_texts))
        vecs = self._embed_batched(texts)
        model = self.embedder.model_name
        prepared = []
        for (d, recs), (start, obs_texts, hist_texts) in zip(items, plans, strict=True):
            n = len(recs)
            goal_vec = vecs[start]
            obs_vecs = vecs[start + 1 : start + 1 + n]
            hist_vecs = vecs[start + 1 + n : start + 1 + 2 * n]
            ep = eps[d.episode_id]
            values: dict[str, Any] = {
                "goal": d.goal,
                "env": d.env if d.env is not None else (ep.env or ""),
                "task_id": d.task_id if d.task_id is not None else (ep.task_id or ""),
                "source": d.source,
                "n_steps": n,
                "embed_model": model,
                "goal_sha": sha1(self._clip(d.goal)),
                "goal_vec": _vec_bytes(goal_vec),
            }
            prepared.append((d, recs, values, goal_vec, obs_texts, obs_vecs, hist_texts, hist_vecs))

        def w(s: Session) -> list[tuple[int, list[int], list[int]]]:
            out = []
            for d, recs, values, _, obs_texts, obs_vecs, hist_texts, hist_vecs in prepared:
                step_ids = self._upsert_steps(s, d.episode_id, recs)
                demo_id = s.scalar(select(DemoRow.id).where(DemoRow.episode_id == d.episode_id))
                old_steps: list[int] = []
                if demo_id is None:
                    demo_id = s.scalar(
                        insert(DemoRow)
                        .values(episode_id=d.episode_id, created_at=utcnow(), **values)
                        .returning(DemoRow.id)
                    )
                else:
                    s.execute(update(DemoRow).where(DemoRow.id == demo_id).values(**values))
                    old_steps = [
                        int(x)
                        for x in s.scalars(
                            select(DemoStepRow.step_id).where(DemoStepRow.demo_id == demo_id)
                        )
                    ]
                    s.execute(delete(DemoStepRow).where(DemoStepRow.demo_id == demo_id))
                if step_ids:
                    s.execute(
                        insert(DemoStepRow),
                        [
                            {
                                "step_id": sid,
                                "demo_id": demo_id,
                                "embed_model": model,
                                "obs_sha": sha1(ot),
                                "obs_vec": _vec_bytes(ov),
                                "hist_sha": sha1(ht),
                                "hist_vec": _vec_bytes(hv),
                            }
                            for sid, ot, ov, ht, hv in zip(
                                step_ids, obs_texts, obs_vecs, hist_texts, hist_vecs, strict=True
                            )
                        ],
                    )
                assert demo_id is not None
                out.append((int(demo_id), step_ids, old_steps))
            return out

        with self._lock:
            written = self.db.write(w)
            self._forget_cached_steps(sid for _, ids, _ in written for sid in ids)
            if any(demo_id in self._demos for demo_id, _, _ in written):
                # Replacing demos: drop their old vectors (HNSW cannot: rebuild from SQL).
                old_demo = [demo_id for demo_id, _, _ in written if demo_id in self._demos]
                old_steps = [sid for _, _, olds in written for sid in olds]
                ok = self._indexes["goal"].remove(old_demo)
                ok &= self._indexes["obs"].remove(old_steps)
                ok &= self._indexes["hist"].remove(old_steps)
                if not ok:
                    self._load_demo_map()
                    for key in KEYS:
                        self._rebuild_key(key)
                    self._maybe_save()
                    self._fingerprint = self._sql_fingerprint()
                    return [demo_id for demo_id, _, _ in written]
            goal_ids: list[int] = []
            goal_vecs: list[np.ndarray] = []
            all_steps: list[int] = []
            all_obs: list[np.ndarray] = []
            all_hist: list[np.ndarray] = []
            for (demo_id, step_ids, old_steps), prep in zip(written, prepared, strict=True):
                d, _, values, goal_vec, _, obs_vecs, _, hist_vecs = prep
                replaced = demo_id in self._demos
                self._demos[demo_id] = _Demo(
                    demo_id,
                    d.episode_id,
                    values["task_id"],
                    values["env"],
                    d.goal,
                    d.source,
                    list(step_ids),
                )
                self._by_episode[d.episode_id] = demo_id
                goal_ids.append(demo_id)
                goal_vecs.append(goal_vec)
                all_steps.extend(step_ids)
                all_obs.append(obs_vecs)
                all_hist.append(hist_vecs)
                self._bump_fingerprint(
                    replaced=replaced, demo_id=demo_id, step_ids=step_ids, old_steps=old_steps
                )
            self._indexes["goal"].add(goal_ids, np.stack(goal_vecs))
            if all_steps:
                self._indexes["obs"].add(all_steps, np.concatenate(all_obs))
                self._indexes["hist"].add(all_steps, np.concatenate(all_hist))
            self._dirty.update(KEYS)
            self._maybe_save()
            return [demo_id for demo_id, _, _ in written]

    def delete_run(self, run_id: str) -> int:
        """Delete every demo (and its demo-step vectors) of a run's episodes; returns how many.

        The recorded steps stay (they are the run's audit record); deleting the run in
        the ledger removes them by cascade.
        """

        def w(s: Session) -> list[int]:
            from sqlalchemy import text as sql_text

            ep_ids = [
                r[0]
                for r in s.execute(
                    sql_text("SELECT id FROM episodes WHERE run_id = :r"), {"r": run_id}
                )
            ]
            if not ep_ids:
                return []
            demo_ids = list(s.scalars(select(DemoRow.id).where(DemoRow.episode_id.in_(ep_ids))))
            if demo_ids:
                s.execute(delete(DemoStepRow).where(DemoStepRow.demo_id.in_(demo_ids)))
                s.execute(delete(DemoRow).where(DemoRow.id.in_(demo_ids)))
            return demo_ids

        with self._lock:
            demo_ids = self.db.write(w)
            self._forget_demos(demo_ids)
            return len(demo_ids)

    def delete_episode(self, episode_id: str) -> bool:
        """Stop using one episode as a demo (its steps stay recorded)."""

        def w(s: Session) -> list[int]:
            ids = list(s.scalars(select(DemoRow.id).where(DemoRow.episode_id == episode_id)))
            if ids:
                s.execute(delete(DemoStepRow).where(DemoStepRow.demo_id.in_(ids)))
                s.execute(delete(DemoRow).where(DemoRow.id.in_(ids)))
            return ids

        with self._lock:
            ids = self.db.write(w)
            self._forget_demos(ids)
            return bool(ids)

    def _forget_demos(self, demo_ids: Iterable[int]) -> None:
        demo_ids = [d for d in demo_ids if d in self._demos]
        if not demo_ids:
            self._fingerprint = self._sql_fingerprint()
            return
        step_ids = [sid for d in demo_ids for sid in self._demos[d].step_ids]
        ok = self._indexes["goal"].remove(demo_ids)
        ok &= self._indexes["obs"].remove(step_ids)
        ok &= self._indexes["hist"].remove(step_ids)
        for d in demo_ids:
            demo = self._demos.pop(d)
            self._by_episode.pop(demo.episode_id, None)
        if not ok:
            for key in KEYS:
                self._rebuild_key(key)
        self._dirty.update(KEYS)
        self.flush()
        self._fingerprint = self._sql_fingerprint()

    # ==================================================================================
    # persistence and cross-process refresh
    # ==================================================================================
    def _maybe_save(self) -> None:
        if time.monotonic() - self._last_save >= self.settings.save_interval_s:
            self.flush()

    def flush(self) -> None:
        """Write dirty indexes and their manifests to ``index_dir``."""
        with self._lock:
            for key in sorted(self._dirty):
                index = self._indexes[key]
                ids = set(int(i) for i in index.ids())
                checksum = rows_checksum(r for r in self._sql_rows(key) if r[0] in ids)
                try:
                    save_index(
                        index,
                        self.index_dir,
                        key,
                        embedding_model=self.embedder.model_name,
                        id_checksum=checksum,
                    )
                except OSError as exc:  # the SQL rows are safe; the index is a cache
                    log.warning("memory: cannot save index %r: %s", key, exc)
                    continue
                self._dirty.discard(key)
            self._last_save = time.monotonic()

    def close(self) -> None:
        """Save pending index changes."""
        self.flush()

    def __enter__(self) -> DemoMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _sql_fingerprint(self) -> tuple[Any, ...]:
        def q(s: Session) -> tuple[Any, ...]:
            a = s.execute(select(func.count(DemoRow.id), func.max(DemoRow.id))).one()
            b = s.execute(
                select(func.count(DemoStepRow.step_id), func.max(DemoStepRow.step_id))
            ).one()
            return (a[0], a[1], b[0], b[1])

        return self.db.read(q)

    def _bump_fingerprint(
        self, *, replaced: bool, demo_id: int, step_ids: list[int], old_steps: list[int]
    ) -> None:
        """Account for our own write without a COUNT over the tables.

        If another process wrote in between, SQL's fingerprint differs from this one and
        the next `refresh` catches up.
        """
        if len(self._fingerprint) != 4:
            self._fingerprint = self._sql_fingerprint()
            return
        nd, md, ns, ms = self._fingerprint
        nd = (nd or 0) + (0 if replaced else 1)
        md = max(md or 0, demo_id)
        ns = (ns or 0) + len(step_ids) - len(old_steps)
        ms = max([ms or 0, *step_ids]) if step_ids else ms
        self._fingerprint = (nd, md, ns, ms)

    def refresh(self, *, force: bool = False) -> bool:
        """Pick up other processes' writes; True when the indexes changed."""
        with self._lock:
            fp = self._sql_fingerprint()
            if fp == self._fingerprint and not force:
                self._last_refresh = time.monotonic()
                return False
            self._load_demo_map()
            for key in KEYS:
                self._sync_index(key) if key not in self._indexes else self._catch_up(key)
            self._forget_cached_steps()
            self._fingerprint = fp
            self._last_refresh = time.monotonic()
            self._maybe_save()
            return True

    def _catch_up(self, key: str) -> None:
        index = self._indexes[key]
        sql_ids = {i for i, _ in self._sql_rows(key)}
        have = set(int(i) for i in index.ids())
        gone = have - sql_ids
        if gone and not index.remove(sorted(gone)):
            self._rebuild_key(key)
            return
        missing = sorted(sql_ids - have)
        if missing:
            ids, vecs = self._sql_vectors(key, missing)
            index.add(ids, vecs)
        if gone or missing:
            self._dirty.add(key)

    # ==================================================================================
    # reading
    # ==================================================================================
    def __len__(self) -> int:
        return len(self._demos)

    def stats(self) -> MemoryStats:
        """Counts and index state."""

        def q(s: Session) -> tuple[int, int, int]:
            return (
                int(s.scalar(select(func.count(DemoRow.id))) or 0),
                int(s.scalar(select(func.count(DemoStepRow.step_id))) or 0),
                int(s.scalar(select(func.count(StepRow.id))) or 0),
            )

        demos, demo_steps, steps = self.db.read(q)
        idx: dict[str, dict[str, Any]] = {}
        for key in KEYS:
            index = self._indexes[key]
            fpath, _ = index_paths(self.index_dir, key)
            idx[key] = {
                "rows": index.ntotal,
                "type": index.index_type,
                "file": str(fpath),
                "saved": key not in self._dirty and fpath.exists(),
                "last_open": self.last_open_report.get(key, ""),
            }
        return MemoryStats(
            demos=demos,
            demo_steps=demo_steps,
            steps=steps,
            embedding_model=self.embedder.model_name,
            dim=self.embedder.dim,
            indexes=idx,
            index_dir=str(self.index_dir),
        )

    def embed_query(
        self, goal: str, observation: str, history: Sequence[HistoryItem] = ()
    ) -> np.ndarray:
        """The three query vectors (goal, observation, goal+history) in one batch."""
        actions = [h if isinstance(h, str) else h[1] for h in history]
        texts = [self._clip(goal), self._clip(observation), self.hist_text(goal, actions)]
        return self.embedder.embed(texts)

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
        """Multi-key retrieval of demo windows for the current state.

        Args:
            goal: the current task's goal.
            observation: the current observation.
            history: earlier steps of the current episode, oldest first, each an
                ``(observation, action)`` pair (what was seen, what was done) or just
                the action string; only the last ``settings.history_len`` actions are used.
            k_episodes: how many demo episodes (by goal similarity).
            k_steps: matched steps per episode (by observation + goal/history).
            window: steps kept either side of each matched step.
            exclude_task_ids: task ids never returned (e.g. the task being solved).
            exclude_episode_ids: episode ids never returned.
            query_vectors: precomputed `embed_query` output (skips the model).

        Returns:
            windows ordered by episode rank, then step index; empty when the memory is.
        """
        interval = self.settings.refresh_interval_s
        if interval is not None and time.monotonic() - self._last_refresh >= interval:
            self.refresh()
        if not self._demos or k_episodes <= 0:
            return []
        q = (
            query_vectors
            if query_vectors is not None
            else self.embed_query(goal, observation, history)
        )
        with self._lock:
            # Over-fetch episodes so that dropped duplicates are replaced by the next best.
            picked = self._top_episodes(
                q[0], 2 * k_episodes, set(exclude_task_ids), set(exclude_episode_ids)
            )
            plans: list[tuple[_Demo, float, list[tuple[int, int]], float, list[int]]] = []
            for demo, ep_score in picked:
                spans, best, hits = self._windows_in(demo, q[1], q[2], k_steps, window)
                if spans:
                    plans.append((demo, ep_score, spans, best, hits))
        if not plans:
            return []
        need = sorted(
            {sid for d, _, spans, _, _ in plans for a, b in spans for sid in d.step_ids[a : b + 1]}
        )
        records = self._load_steps(need)
        out: list[DemoWindow] = []
        seen: set[tuple[Any, ...]] = set()
        rank = 0
        for demo, ep_score, spans, best, hits in plans:
            if rank >= k_episodes:
                break
            position = {sid: p for p, sid in enumerate(demo.step_ids)}
            added = False
            for a, b in spans:
                steps = [records[sid] for sid in demo.step_ids[a : b + 1] if sid in records]
                if not steps:
                    continue
                sig = (
                    demo.goal.strip().lower(),
                    tuple((st.observation.strip(), st.action.strip()) for st in steps),
                )
                if sig in seen:
                    continue
                seen.add(sig)
                span_hits = [
                    records[sid].idx for sid in hits if sid in records and a <= position[sid] <= b
                ]
                out.append(
                    DemoWindow(
                        demo_id=demo.demo_id,
                        episode_id=demo.episode_id,
                        task_id=demo.task_id,
                        env=demo.env,
                        goal=demo.goal,
                        source=demo.source,
                        steps=[st.model_copy() for st in steps],
                        hit_idxs=sorted(span_hits),
                        episode_score=float(ep_score),
                        step_score=float(best),
                        rank=rank,
                    )
                )
                added = True
            if added:
                rank += 1
        return out

    def _top_episodes(
        self, qgoal: np.ndarray, k: int, ex_tasks: set[str], ex_eps: set[str]
    ) -> list[tuple[_Demo, float]]:
        index = self._indexes["goal"]
        fetch = k
        while True:
            scores, ids = index.search(qgoal[None, :], fetch + len(ex_tasks) + len(ex_eps))
            out: list[tuple[_Demo, float]] = []
            for sc, i in zip(scores[0], ids[0], strict=True):
                demo = self._demos.get(int(i))
                if demo is None or not demo.step_ids:
                    continue
                if demo.task_id in ex_tasks or demo.episode_id in ex_eps:
                    continue
                out.append((demo, float(sc)))
            if len(out) >= k or ids.shape[1] >= index.ntotal:
                break
            fetch *= 4
        # stable: score desc, then demo id
        out.sort(key=lambda t: (-round(t[1], 6), t[0].demo_id))
        return out[:k]

    def _windows_in(
        self, demo: _Demo, qobs: np.ndarray, qhist: np.ndarray, k_steps: int, window: int
    ) -> tuple[list[tuple[int, int]], float, list[int]]:
        ids = np.asarray(demo.step_ids, dtype=np.int64)
        if len(ids) == 0 or k_steps <= 0:
            return [], 0.0, []
        s = self.settings
        score = s.w_obs * (self._indexes["obs"].reconstruct_batch(ids) @ qobs)
        if s.w_hist:
            score = score + s.w_hist * (self._indexes["hist"].reconstruct_batch(ids) @ qhist)
        order = np.argsort(-score, kind="stable")[:k_steps]
        spans = sorted((max(0, int(p) - window), min(len(ids) - 1, int(p) + window)) for p in order)
        merged: list[tuple[int, int]] = []
        for a, b in spans:
            if merged and a <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        return merged, float(score[order[0]]), [int(ids[p]) for p in order]

    _STEPS_BY_ID = select(
        StepRow.id,
        StepRow.idx,
        StepRow.observation,
        StepRow.action,
        StepRow.reasoning,
        StepRow.reward,
        StepRow.score,
        StepRow.done,
        StepRow.actor,
        StepRow.valid_actions,
        StepRow.meta,
    ).where(StepRow.id.in_(bindparam("ids", expanding=True)))

    def _load_steps(self, step_ids: list[int]) -> dict[int, StepRecord]:
        """Step records by id: from a small LRU cache, the rest with one Core SELECT."""
        out: dict[int, StepRecord] = {}
        missing: list[int] = []
        with self._cache_lock:
            for sid in step_ids:
                rec = self._step_cache.get(sid)
                if rec is None:
                    missing.append(sid)
                else:
                    self._step_cache.move_to_end(sid)
                    out[sid] = rec
        if not missing:
            return out
        try:
            with self.db.engine.connect() as conn:
                for i in range(0, len(missing), 900):
                    rows = conn.execute(self._STEPS_BY_ID, {"ids": missing[i : i + 900]})
                    for r in rows:
                        # rows come from our own table: skip pydantic validation
                        out[int(r.id)] = StepRecord.model_construct(
                            idx=r.idx,
                            observation=r.observation,
                            action=r.action,
                            reasoning=r.reasoning,
                            reward=r.reward,
                            score=r.score,
                            done=bool(r.done),
                            actor=r.actor,
                            valid_actions=r.valid_actions,
                            meta=r.meta,
                            id=int(r.id),
                        )
        except OperationalError as exc:
            raise StoreError(f"database read failed: {exc.orig or exc}") from exc
        with self._cache_lock:
            for sid in missing:
                if sid in out:
                    self._step_cache[sid] = out[sid]
            while len(self._step_cache) > self.settings.step_cache_size:
                self._step_cache.popitem(last=False)
        return out

    def _forget_cached_steps(self, step_ids: Iterable[int] | None = None) -> None:
        with self._cache_lock:
            if step_ids is None:
                self._step_cache.clear()
            else:
                for sid in step_ids:
                    self._step_cache.pop(sid, None)

    def search(self, key: Key, text: str, k: int = 5) -> list[tuple[int, float]]:
        """Raw top-k (id, score) in one index (demo ids for "goal", step ids otherwise)."""
        if key == "hist":
            text = self.hist_text(text, [])
        q = self.embedder.embed([self._clip(text)])
        scores, ids = self._indexes[key].search(q, k)
        return [(int(i), float(s)) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0]


_LIVE: weakref.WeakSet[DemoMemory] = weakref.WeakSet()


@atexit.register
def _flush_live_memories() -> None:
    """Save unsaved indexes at interpreter exit (they are caches: failures are harmless)."""
    for mem in list(_LIVE):
        try:
            mem.flush()
        except Exception:  # noqa: BLE001, S110 - SQL already holds everything
            pass


def _record(r: StepRow) -> StepRecord:
    return StepRecord(
        idx=r.idx,
        observation=r.observation,
        action=r.action,
        reasoning=r.reasoning,
        reward=r.reward,
        score=r.score,
        done=r.done,
        actor=r.actor,
        valid_actions=r.valid_actions,
        meta=r.meta,
        id=int(r.id),
    )


def _memory_settings(settings: Any) -> MemorySettings:
    if settings is None:
        return MemorySettings()
    if isinstance(settings, MemorySettings):
        return settings
    if isinstance(settings, dict):
        return MemorySettings(**settings)
    mem = getattr(settings, "memory", None)
    if isinstance(mem, MemorySettings):
        return mem
    return MemorySettings(threads=int(getattr(settings, "threads", 1) or 1))


def _default_index_dir(db: Any, settings: Any) -> Path:
    url = str(getattr(db, "url", ""))
    if url.startswith("sqlite") and "///" in url:
        path = url.split("///", 1)[1].split("?", 1)[0]
        if path and path != ":memory:":
            return Path(path).resolve().parent / "indexes"
    home = Path(getattr(settings, "home", ".nightowl"))
    return home / "indexes"
