"""Writes to the demo memory: add demo episodes, delete demos.

SQL is written first, in one transaction, and only then the in-process indexes; the
model never runs inside a write transaction (texts are embedded before it starts).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy import text as sql_text
from sqlalchemy.orm import Session

from nightowl.errors import StoreError
from nightowl.memory._core import MemoryCore
from nightowl.memory._records import (
    KEYS,
    DemoEntry,
    EpisodeDemo,
    StepRecord,
    checked_demos,
    sha1,
    vec_bytes,
)
from nightowl.memory._reembed import embed_texts
from nightowl.memory._sync import IndexSync
from nightowl.memory.schema import DemoRow, DemoStepRow, StepRow, utcnow
from nightowl.memory.steps import upsert_steps

_EPISODES = sql_text("SELECT id, task_id, env FROM episodes WHERE id IN :ids").bindparams(
    bindparam("ids", expanding=True)
)


@dataclass(frozen=True, kw_only=True)
class _Prepared:
    """One episode ready to write: its demo row values and embedded keys."""

    demo: EpisodeDemo
    steps: list[StepRecord]
    values: dict[str, Any]
    goal_vec: np.ndarray
    obs_texts: list[str]
    obs_vecs: np.ndarray
    hist_texts: list[str]
    hist_vecs: np.ndarray


class DemoWriter:
    """The write path of one `MemoryCore` (SQL first, then the indexes)."""

    def __init__(self, core: MemoryCore, sync: IndexSync) -> None:
        """Write through ``core``; ``sync`` rebuilds/saves indexes when needed."""
        self.core = core
        self.sync = sync

    # --- demos ------------------------------------------------------------------------
    def add_episodes(self, demos: Sequence[EpisodeDemo]) -> list[int]:
        """Store episodes as demos: one read, one embedding batch, one transaction."""
        items = checked_demos(demos)
        if not items:
            return []
        prepared = self._prepare(items)
        c = self.core
        with c.lock:
            written: list[tuple[int, list[int], list[int]]] = c.db.write(
                lambda s: [self._write_one(s, p) for p in prepared]
            )
            c.steps.forget(sid for _, ids, _ in written for sid in ids)
            old_demo = [demo_id for demo_id, _, _ in written if demo_id in c.demos]
            olds = [sid for _, _, old_steps in written for sid in old_steps]
            if old_demo and self._drop_vectors(old_demo, olds):  # replacing demos
                self.sync.load_demo_map()
                self.sync.maybe_save()
                c.fingerprint = self.sync.sql_fingerprint()
                return [demo_id for demo_id, _, _ in written]
            for (demo_id, step_ids, old_steps), p in zip(written, prepared, strict=True):
                replaced = demo_id in c.demos
                c.demos[demo_id] = DemoEntry(
                    demo_id=demo_id,
                    episode_id=p.demo.episode_id,
                    task_id=p.values["task_id"],
                    env=p.values["env"],
                    goal=p.demo.goal,
                    source=p.demo.source,
                    step_ids=list(step_ids),
                )
                c.by_episode[p.demo.episode_id] = demo_id
                self.sync.bump_fingerprint(
                    replaced=replaced, demo_id=demo_id, step_ids=step_ids, old_steps=old_steps
                )
            c.indexes["goal"].add([w[0] for w in written], np.stack([p.goal_vec for p in prepared]))
            all_steps = [sid for _, ids, _ in written for sid in ids]
            if all_steps:
                c.indexes["obs"].add(all_steps, np.concatenate([p.obs_vecs for p in prepared]))
                c.indexes["hist"].add(all_steps, np.concatenate([p.hist_vecs for p in prepared]))
            c.dirty.update(KEYS)
            self.sync.maybe_save()
            return [demo_id for demo_id, _, _ in written]

    def _prepare(self, items: list[tuple[EpisodeDemo, list[StepRecord]]]) -> list[_Prepared]:
        """Read the episodes' ledger rows and earlier actions, embed every key text once."""
        c = self.core
        ep_ids = [d.episode_id for d, _ in items]

        def read(s: Session) -> tuple[dict[str, Any], dict[str, list[tuple[int, str]]]]:
            eps: dict[str, Any] = {}
            prior: dict[str, list[tuple[int, str]]] = {e: [] for e in ep_ids}
            for i in range(0, len(ep_ids), 500):
                chunk = ep_ids[i : i + 500]
                for row in s.execute(_EPISODES, {"ids": chunk}):
                    eps[row.id] = row
                for e, idx, act in s.execute(
                    select(StepRow.episode_id, StepRow.idx, StepRow.action).where(
                        StepRow.episode_id.in_(chunk)
                    )
                ):
                    prior[e].append((int(idx), str(act)))
            return eps, prior

        eps, prior = c.db.read(read)
        unknown = [e for e in ep_ids if e not in eps]
        if unknown:
            raise StoreError(f"unknown episode {unknown[0]!r}: start it in the ledger first")
        texts: list[str] = []
        plans: list[tuple[int, list[str], list[str]]] = []
        for d, recs in items:
            recorded = dict(prior[d.episode_id])
            recorded.update({st.idx: st.action for st in recs})
            actions = sorted(recorded.items())
            obs_texts = [c.clip(st.observation) for st in recs]
            hist_texts = [c.hist_text(d.goal, [a for i, a in actions if i < st.idx]) for st in recs]
            plans.append((len(texts), obs_texts, hist_texts))
            texts.extend([c.goal_text(d.goal), *obs_texts, *hist_texts])
        vecs = embed_texts(c, texts)
        out: list[_Prepared] = []
        for (d, recs), (start, obs_texts, hist_texts) in zip(items, plans, strict=True):
            n = len(recs)
            ep = eps[d.episode_id]
            out.append(
                _Prepared(
                    demo=d,
                    steps=recs,
                    values={
                        "goal": d.goal,
                        "env": d.env if d.env is not None else (ep.env or ""),
                        "task_id": d.task_id if d.task_id is not None else (ep.task_id or ""),
                        "source": d.source,
                        "n_steps": n,
                        "embed_model": c.embedder.model_name,
                        "goal_sha": sha1(c.goal_text(d.goal)),
                        "goal_vec": vec_bytes(vecs[start]),
                    },
                    goal_vec=vecs[start],
                    obs_texts=obs_texts,
                    obs_vecs=vecs[start + 1 : start + 1 + n],
                    hist_texts=hist_texts,
                    hist_vecs=vecs[start + 1 + n : start + 1 + 2 * n],
                )
            )
        return out

    def _write_one(self, s: Session, p: _Prepared) -> tuple[int, list[int], list[int]]:
        """Upsert one episode's steps and (re)write its demo rows; (demo id, steps, old)."""
        episode_id = p.demo.episode_id
        step_ids = upsert_steps(s, episode_id, p.steps)
        demo_id = s.scalar(select(DemoRow.id).where(DemoRow.episode_id == episode_id))
        old_steps: list[int] = []
        if demo_id is None:
            demo_id = s.scalar(
                insert(DemoRow)
                .values(episode_id=episode_id, created_at=utcnow(), **p.values)
                .returning(DemoRow.id)
            )
        else:
            s.execute(update(DemoRow).where(DemoRow.id == demo_id).values(**p.values))
            old_steps = [
                int(x)
                for x in s.scalars(
                    select(DemoStepRow.step_id).where(DemoStepRow.demo_id == demo_id)
                )
            ]
            s.execute(delete(DemoStepRow).where(DemoStepRow.demo_id == demo_id))
        assert demo_id is not None
        if step_ids:
            model = self.core.embedder.model_name
            s.execute(
                insert(DemoStepRow),
                [
                    {
                        "step_id": sid,
                        "demo_id": demo_id,
                        "embed_model": model,
                        "obs_sha": sha1(ot),
                        "obs_vec": vec_bytes(ov),
                        "hist_sha": sha1(ht),
                        "hist_vec": vec_bytes(hv),
                    }
                    for sid, ot, ov, ht, hv in zip(
                        step_ids, p.obs_texts, p.obs_vecs, p.hist_texts, p.hist_vecs, strict=True
                    )
                ],
            )
        return int(demo_id), step_ids, old_steps

    def _drop_vectors(self, demo_ids: list[int], step_ids: list[int]) -> bool:
        """Remove vectors; True when an index could not (HNSW), so all were rebuilt from SQL."""
        idx = self.core.indexes
        removed = [idx[k].remove(step_ids if k != "goal" else demo_ids) for k in KEYS]
        if all(removed):
            return False
        for key in KEYS:
            self.sync.rebuild_key(key)
        return True

    # --- deletes ------------------------------------------------------------------------
    def delete_run(self, run_id: str) -> int:
        """Delete every demo of a run's episodes (their steps stay); returns how many."""

        def w(s: Session) -> list[int]:
            query = sql_text("SELECT id FROM episodes WHERE run_id = :r")
            ep_ids = list(s.scalars(query, {"r": run_id}))
            return _delete_demos(s, DemoRow.episode_id.in_(ep_ids)) if ep_ids else []

        return self._delete(w)

    def delete_episode(self, episode_id: str) -> bool:
        """Stop using one episode as a demo (its steps stay recorded)."""
        return bool(self._delete(lambda s: _delete_demos(s, DemoRow.episode_id == episode_id)))

    def _delete(self, write: Any) -> int:
        """Run ``write`` (it deletes demos and returns their ids), then drop their vectors."""
        c = self.core
        with c.lock:
            deleted: list[int] = c.db.write(write)
            demo_ids = [d for d in deleted if d in c.demos]
            if demo_ids:
                self._drop_vectors(demo_ids, [sid for d in demo_ids for sid in c.demos[d].step_ids])
                for d in demo_ids:
                    c.by_episode.pop(c.demos.pop(d).episode_id, None)
                c.dirty.update(KEYS)
                self.sync.flush()
            c.fingerprint = self.sync.sql_fingerprint()
            return len(deleted)


def _delete_demos(s: Session, where: Any) -> list[int]:
    """Delete the demos matching ``where`` and their demo steps; returns their ids."""
    ids = [int(x) for x in s.scalars(select(DemoRow.id).where(where))]
    if ids:
        s.execute(delete(DemoStepRow).where(DemoStepRow.demo_id.in_(ids)))
        s.execute(delete(DemoRow).where(DemoRow.id.in_(ids)))
    return ids
