"""Re-embedding stored vectors whose text changed, whose model differs, or that are absent.

Each stored vector sits beside the model name and the SHA-1 of the exact text that was
embedded. At open (and on ``rebuild(reembed=True)``) every demo goal and demo step is
checked against the texts SQL holds now; only the rows that disagree run through the
model, and their new vectors and hashes are written back in one transaction.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nightowl.memory._core import MemoryCore
from nightowl.memory._records import sha1, vec_bytes
from nightowl.memory.schema import DemoRow, DemoStepRow, StepRow

log = logging.getLogger(__name__)

#: episode id -> [(step idx, action)], ordered by idx
ActionsByEpisode = dict[str, list[tuple[int, str]]]


def embed_texts(core: MemoryCore, texts: list[str]) -> np.ndarray:
    """Embed ``texts`` (an empty list gives a (0, dim) array without calling the model)."""
    if not texts:
        return np.zeros((0, core.embedder.dim), np.float32)
    return core.embedder.embed(texts)


def _read_demo_texts(s: Session) -> tuple[list[Any], list[Any], ActionsByEpisode]:
    actions: ActionsByEpisode = {}
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


def _hist_text_for(
    core: MemoryCore, goal: str, episode_id: str, idx: int, cache: ActionsByEpisode
) -> str:
    if episode_id not in cache:

        def q(s: Session) -> list[tuple[int, str]]:
            rows = s.execute(
                select(StepRow.idx, StepRow.action)
                .where(StepRow.episode_id == episode_id)
                .order_by(StepRow.idx)
            ).all()
            return [(int(a), str(b)) for a, b in rows]

        cache[episode_id] = core.db.read(q)
    prev = [a for i, a in cache[episode_id] if i < idx]
    return core.hist_text(goal, prev)


def reembed_stale(core: MemoryCore, *, force: bool = False) -> int:
    """Re-embed stale stored vectors (all of them when ``force``); returns how many rows."""
    model = core.embedder.model_name
    size = core.embedder.dim * 4
    demos, steps, hist_cache = core.db.read(_read_demo_texts)
    goals = {d.id: d.goal for d in demos}
    bad_demos = [
        d
        for d in demos
        if force
        or d.embed_model != model
        or d[4] != size
        or d.goal_sha != sha1(core.goal_text(d.goal))
    ]
    bad_steps: list[Any] = []
    for row in steps:
        stale = force or row.embed_model != model or row[5] != size or row[6] != size
        stale = stale or row.obs_sha != sha1(core.clip(row.observation))
        if not stale:
            # The goal+history text depends on the episode's earlier actions.
            text = _hist_text_for(
                core, goals.get(row.demo_id, ""), row.episode_id, row.idx, hist_cache
            )
            stale = row.hist_sha != sha1(text)
        if stale:
            bad_steps.append(row)
    if not bad_demos and not bad_steps:
        return 0
    log.warning(
        "memory: re-embedding %d goals and %d steps (changed text or model)",
        len(bad_demos),
        len(bad_steps),
    )
    goal_texts = [core.goal_text(d.goal) for d in bad_demos]
    goal_vecs = embed_texts(core, goal_texts)
    obs_texts = [core.clip(r.observation) for r in bad_steps]
    hist_texts = [
        _hist_text_for(core, goals.get(r.demo_id, ""), r.episode_id, r.idx, hist_cache)
        for r in bad_steps
    ]
    vecs = embed_texts(core, obs_texts + hist_texts)
    obs_vecs, hist_vecs = vecs[: len(obs_texts)], vecs[len(obs_texts) :]

    def write(s: Session) -> None:
        for d, t, v in zip(bad_demos, goal_texts, goal_vecs, strict=True):
            row = s.get(DemoRow, d.id)
            if row is not None:
                row.goal_sha, row.goal_vec, row.embed_model = sha1(t), vec_bytes(v), model
        for r, ot, ov, ht, hv in zip(
            bad_steps, obs_texts, obs_vecs, hist_texts, hist_vecs, strict=True
        ):
            srow = s.get(DemoStepRow, r.step_id)
            if srow is not None:
                srow.obs_sha, srow.obs_vec = sha1(ot), vec_bytes(ov)
                srow.hist_sha, srow.hist_vec = sha1(ht), vec_bytes(hv)
                srow.embed_model = model

    core.db.write(write)
    return len(bad_demos) + len(bad_steps)
