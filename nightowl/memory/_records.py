"""Records and settings of the demo memory, and the texts each retrieval key embeds.

Everything here is plain data or a pure function: what the other memory modules pass
around (`StepRecord`, `EpisodeDemo`, `DemoWindow`, `MemoryStats`), the knobs
(`MemorySettings`), the one conversion from a ``steps`` row to a `StepRecord`, and the
exact texts behind the three keys (their SHA-1 is stored beside each vector, so the
writer, the verifier and the query side must build them the same way).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from nightowl.config_memory import MemorySettings

KEYS = ("goal", "obs", "hist")
Key = Literal["goal", "obs", "hist"]

#: an earlier step of the current episode: (observation, action), or just the action
HistoryItem = tuple[str, str] | Sequence[str] | str


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
    """One episode to store as a demo (the argument of `DemoStore.add_episodes`)."""

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
    best_idx: int | None = Field(
        None, description="idx of this window's best-scored hit (None: not known)"
    )
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


@dataclass
class DemoEntry:
    """In-process map entry of one demo (mutable: rebuilt from SQL on refresh)."""

    demo_id: int
    episode_id: str
    task_id: str
    env: str
    goal: str
    source: str
    step_ids: list[int] = field(default_factory=list)  # ordered by step idx


# --- conversions -----------------------------------------------------------------------
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


def checked_demos(demos: Sequence[EpisodeDemo]) -> list[tuple[EpisodeDemo, list[StepRecord]]]:
    """Each demo with its steps ordered by idx; ValueError: a repeated idx or episode."""
    items = [(d, sorted(d.steps, key=lambda st: st.idx)) for d in demos]
    for d, recs in items:
        if len({st.idx for st in recs}) != len(recs):
            raise ValueError(f"steps of episode {d.episode_id!r} repeat an idx")
    if len({d.episode_id for d, _ in items}) != len(items):
        raise ValueError("an episode appears twice")
    return items


def step_record(row: Any) -> StepRecord:
    """A `StepRecord` from a ``steps`` row (ORM object or Core row: same attribute names).

    Rows come from our own table, so pydantic validation is skipped (it would dominate
    the read path); the two fields SQLite hands back loosely are coerced.
    """
    return StepRecord.model_construct(
        idx=int(row.idx),
        observation=row.observation,
        action=row.action,
        reasoning=row.reasoning,
        reward=float(row.reward),
        score=row.score,
        done=bool(row.done),
        actor=row.actor,
        valid_actions=row.valid_actions,
        meta=row.meta,
        id=int(row.id),
    )


def step_values(st: StepRecord) -> dict[str, Any]:
    """The ``steps`` columns a `StepRecord` writes (all but the keys and the timestamp)."""
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


def sha1(text: str) -> str:
    """Hash of an embedded text (stored beside its vector)."""
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


def vec_bytes(v: np.ndarray) -> bytes:
    """A vector as the float32 bytes stored in SQL."""
    return np.asarray(v, dtype=np.float32).tobytes()


# --- key texts -------------------------------------------------------------------------
#: a quoted value: quotes not inside a word (so "That's it" is no quote)
_QUOTED = re.compile(r"""(?<!\w)(['"])[^'"\n]+?\1(?!\w)""")
_NUMBER = re.compile(r"(?<![\w.])[$€£]?\d+(?:[.,]\d+)*(?![\w])")


def goal_template(goal: str) -> str:
    """``goal`` with its quoted values and numbers masked: the task's template.

    >>> goal_template("Send $25 to 'Ann Lee' for 'pizza'; that's it.")
    "Send N to '…' for '…'; that's it."
    """
    return _NUMBER.sub("N", _QUOTED.sub(lambda m: f"{m.group(1)}…{m.group(1)}", goal))


def clip(text: str, max_chars: int) -> str:
    """The text a key embeds: stripped and cut to ``max_chars``."""
    return (text or "").strip()[:max_chars]


def hist_text(goal: str, previous_actions: Sequence[str], history_len: int, max_chars: int) -> str:
    """The goal+history key text: the goal and the last ``history_len`` actions."""
    recent = [a.strip() for a in previous_actions][-history_len:] if history_len else []
    text = f"Goal: {goal.strip()}\nDone so far: " + (" ; ".join(recent) if recent else "(start)")
    return clip(text, max_chars)


def memory_settings(settings: Any) -> MemorySettings:
    """`MemorySettings` from itself, a dict, nightowl `Settings` (its threads) or None."""
    if settings is None:
        return MemorySettings()
    if isinstance(settings, MemorySettings):
        return settings
    if isinstance(settings, dict):
        return MemorySettings(**settings)
    mem = getattr(settings, "memory", None)
    if isinstance(mem, MemorySettings):
        if "threads" in mem.model_fields_set or not hasattr(settings, "threads"):
            return mem
        return mem.model_copy(update={"threads": int(settings.threads or 1)})
    return MemorySettings(threads=int(getattr(settings, "threads", 1) or 1))
