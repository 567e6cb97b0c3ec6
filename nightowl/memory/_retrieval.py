"""The read path: embed a query's keys, find demo episodes, cut windows around hits.

`retrieve` embeds the query's goal, observation and goal+history texts (one model call
for the texts not in the LRU query cache: the goal repeats every step of an episode),
takes the top ``k_episodes`` demo episodes by goal similarity (skipping excluded task
and episode ids), scores every demo step of each exactly by
``w_obs * cos(observation) + w_hist * cos(goal+history)`` from the vectors kept in the
step indexes, takes the best ``k_steps`` per episode, cuts windows of ``window`` steps
either side, merges overlapping windows, drops exact duplicates (same goal, actions and
observations), and returns `DemoWindow`s ordered by episode rank, then step index.
Step records come from an LRU cache; the misses of one query are read in one SELECT.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from sqlalchemy import bindparam, select
from sqlalchemy.exc import OperationalError

from nightowl.errors import StoreError
from nightowl.memory._core import LruCache, MemoryCore
from nightowl.memory._records import (
    DemoEntry,
    DemoWindow,
    HistoryItem,
    Key,
    StepRecord,
    step_record,
)
from nightowl.memory._sync import IndexSync
from nightowl.memory.schema import IN_CHUNK, StepRow

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

#: one episode's plan: (demo, goal score, merged (first, last) positions, best score, hits)
_Plan = tuple[DemoEntry, float, list[tuple[int, int]], float, list[int]]


class Retriever:
    """Multi-key retrieval over one `MemoryCore`."""

    def __init__(self, core: MemoryCore, sync: IndexSync) -> None:
        """Read ``core``; ``sync`` picks up other processes' writes before a query."""
        self.core = core
        self.sync = sync
        self.query_vectors: LruCache[str, np.ndarray] = LruCache(core.settings.query_cache_size)

    # --- query embedding ------------------------------------------------------------------
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of ``texts``: cached ones reused, the rest embedded in one model call."""
        found, missing = self.query_vectors.get_many(texts)
        todo = list(dict.fromkeys(missing))
        if todo:
            vecs = self.core.embedder.embed(todo)
            fresh = dict(zip(todo, vecs, strict=True))
            self.query_vectors.put_many(fresh.items())
            found.update(fresh)
        return np.stack([found[t] for t in texts]).astype(np.float32, copy=False)

    def embed_query(
        self, goal: str, observation: str, history: Sequence[HistoryItem] = ()
    ) -> np.ndarray:
        """The three query vectors (goal, observation, goal+history) as rows."""
        c = self.core
        actions = [h if isinstance(h, str) else h[1] for h in history]  # pairs or bare actions
        return self.embed_texts(
            [c.goal_text(goal), c.clip(observation), c.hist_text(goal, actions)]
        )

    # --- retrieval ------------------------------------------------------------------------
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
        """Multi-key retrieval of demo windows (see `DemoStore.retrieve`)."""
        c = self.core
        interval = c.settings.refresh_interval_s
        if interval is not None and time.monotonic() - c.last_refresh >= interval:
            self.sync.refresh()
        if not c.demos or k_episodes <= 0:
            return []
        q = (
            query_vectors
            if query_vectors is not None
            else self.embed_query(goal, observation, history)
        )
        with c.lock:
            # Over-fetch episodes so that dropped duplicates are replaced by the next best.
            picked = self._top_episodes(
                q[0], 2 * k_episodes, set(exclude_task_ids), set(exclude_episode_ids)
            )
            scores = self._step_scores([d for d, _ in picked], q[1], q[2])
            plans: list[_Plan] = []
            for (demo, ep_score), score in zip(picked, scores, strict=True):
                spans, best, hits = _spans(demo, score, k_steps, window)
                if spans:
                    plans.append((demo, ep_score, spans, best, hits))
        if not plans:
            return []
        need = sorted(
            {sid for d, _, spans, _, _ in plans for a, b in spans for sid in d.step_ids[a : b + 1]}
        )
        return _windows(plans, self.load_steps(need), k_episodes)

    def _top_episodes(
        self, qgoal: np.ndarray, k: int, ex_tasks: set[str], ex_eps: set[str]
    ) -> list[tuple[DemoEntry, float]]:
        index = self.core.indexes["goal"]
        demos = self.core.demos
        fetch = k
        while True:
            scores, ids = index.search(qgoal[None, :], fetch + len(ex_tasks) + len(ex_eps))
            out: list[tuple[DemoEntry, float]] = []
            for sc, i in zip(scores[0], ids[0], strict=True):
                demo = demos.get(int(i))
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

    def _step_scores(
        self, demos: list[DemoEntry], qobs: np.ndarray, qhist: np.ndarray
    ) -> list[np.ndarray]:
        """Exact step scores of each demo, from one reconstruct call per key."""
        ids = np.asarray([sid for d in demos for sid in d.step_ids], dtype=np.int64)
        if len(ids) == 0:
            return [np.zeros(0, np.float32) for _ in demos]
        s = self.core.settings
        idx = self.core.indexes
        score = s.w_obs * (idx["obs"].reconstruct_batch(ids) @ qobs)
        if s.w_hist:
            score = score + s.w_hist * (idx["hist"].reconstruct_batch(ids) @ qhist)
        cuts = np.cumsum([len(d.step_ids) for d in demos])[:-1]
        return list(np.split(score, cuts))

    def load_steps(self, step_ids: list[int]) -> dict[int, StepRecord]:
        """Step records by id: from the LRU cache, the rest with one Core SELECT."""
        out, missing = self.core.steps.get_many(step_ids)
        if not missing:
            return out
        fresh: dict[int, StepRecord] = {}
        try:
            with self.core.db.engine.connect() as conn:
                for i in range(0, len(missing), IN_CHUNK):
                    for r in conn.execute(_STEPS_BY_ID, {"ids": missing[i : i + IN_CHUNK]}):
                        fresh[int(r.id)] = step_record(r)
        except OperationalError as exc:
            raise StoreError(f"database read failed: {exc.orig or exc}") from exc
        self.core.steps.put_many(fresh.items())
        out.update(fresh)
        return out

    def search(self, key: Key, text: str, k: int = 5) -> list[tuple[int, float]]:
        """Raw top-k (id, score) in one index (demo ids for "goal", step ids otherwise)."""
        c = self.core
        if key == "hist":
            query = c.hist_text(text, [])
        else:
            query = c.goal_text(text) if key == "goal" else c.clip(text)
        q = self.embed_texts([query])
        scores, ids = c.indexes[key].search(q, k)
        return [(int(i), float(s)) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0]


def _spans(
    demo: DemoEntry, score: np.ndarray, k_steps: int, window: int
) -> tuple[list[tuple[int, int]], float, list[int]]:
    """Merged (first, last) positions around the best ``k_steps`` steps, best score, hits."""
    if len(score) == 0 or k_steps <= 0:
        return [], 0.0, []
    order = np.argsort(-score, kind="stable")[:k_steps]
    n = len(score)
    spans = sorted((max(0, int(p) - window), min(n - 1, int(p) + window)) for p in order)
    merged: list[tuple[int, int]] = []
    for a, b in spans:
        if merged and a <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged, float(score[order[0]]), [demo.step_ids[int(p)] for p in order]


def _windows(
    plans: list[_Plan], records: dict[int, StepRecord], k_episodes: int
) -> list[DemoWindow]:
    """Cut the planned spans into `DemoWindow`s, dropping exact duplicates, ranked."""
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
            # hits are in score order: the first one inside this span is its best
            span_hits = [
                records[sid].idx for sid in hits if sid in records and a <= position[sid] <= b
            ]
            out.append(
                DemoWindow.model_construct(
                    demo_id=demo.demo_id,
                    episode_id=demo.episode_id,
                    task_id=demo.task_id,
                    env=demo.env,
                    goal=demo.goal,
                    source=demo.source,
                    steps=[st.model_copy() for st in steps],
                    hit_idxs=sorted(span_hits),
                    best_idx=span_hits[0] if span_hits else None,
                    episode_score=float(ep_score),
                    step_score=float(best),
                    rank=rank,
                )
            )
            added = True
        if added:
            rank += 1
    return out
