"""What one episode carries through the graph: checkpointed state, knobs, and the result.

`EpisodeState` is what LangGraph checkpoints after every node, so it holds ids and small
values only (a bounded history, the action list for replay, the budget as plain numbers,
counters, the last decision's short trail); transcripts never accumulate there.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from nightowl.agent.budget import EpisodeBudget
from nightowl.agent.ladder import TierDecision
from nightowl.distill.parser import normalize_action
from nightowl.ledger.metrics import TEACHER_ACTORS, teacher_share

#: how many (observation, action) pairs of history the state keeps
HISTORY_KEEP = 6
#: how many visited (state, action) keys the state keeps (loop detection, whole episode)
SEEN_KEEP = 200


def visit_key(observation: str, action: str) -> str:
    """A short key of (observation, action): whitespace collapsed, numbers masked.

    Move counters and scores change on every step without the state changing, so they
    are masked. A tier that would take an action already taken in the same state this
    episode is looping (`nightowl.agent.tiers.common.repeats_without_progress`).
    """
    state = re.sub(r"\d+", "#", " ".join(observation.split()))
    act = normalize_action(action)
    return hashlib.blake2b(f"{state}\x00{act}".encode(), digest_size=8).hexdigest()


class EpisodeState(TypedDict, total=False):
    """Checkpointed per-episode state (small values only)."""

    run_id: str
    episode_id: str
    task_id: str
    env_name: str
    split: str
    step: int
    goal: str | None
    observation: str
    valid_actions: list[str] | None
    history: list[list[str]]
    #: `visit_key` of every (observation, action) taken this episode (bounded)
    seen: list[str]
    actions: list[str]
    trail: list[dict[str, Any]]
    action: str | None
    actor: str
    done: bool
    won: bool
    score: float
    reason: str
    budget: dict[str, dict[str, float]]
    stats: dict[str, float]
    finished: bool
    #: set when the episode ended on an infrastructure error (environment or backend)
    error: str


@dataclass(kw_only=True)
class LoopConfig:
    """Knobs of the loop that are not tier-specific."""

    budget: EpisodeBudget = field(default_factory=EpisodeBudget)
    history: int = 3
    retrieve: bool = True
    k_episodes: int = 2
    k_steps: int = 2
    window: int = 3
    #: "step": retrieve demos at every step; "episode": once per episode (the demo block
    #: then stays the same, so the model's prefix KV cache covers it on later steps)
    demos_per: str = "step"
    store_escalations: bool = True
    record_steps: bool = True
    recursion_limit: int = 100_000


@dataclass(kw_only=True)
class EpisodeResult:
    """What one episode produced (also rebuilt from a finished checkpoint)."""

    run_id: str
    episode_id: str
    task_id: str
    success: bool
    score: float
    steps: int
    reason: str
    stats: dict[str, float]
    budget: dict[str, dict[str, float]]
    wall_s: float = 0.0
    resumed: bool = False
    #: why the environment or a model backend failed; "" for an episode that played out
    error: str = ""


def new_counters() -> dict[str, float]:
    """Zeroed per-episode counters (``steps_teacher`` counts teacher/oracle-acted steps)."""
    return dict.fromkeys((
        "student_samples", "student_calls", "teacher_calls", "escalations", "steps_student",
        "steps_teacher", "steps_search", "steps_fallback", "cost_usd", "model_s", "env_s",
        "retrieve_s", "node_s", "parse_failures",
    ), 0.0)


def count_decisions(stats: dict[str, float], trail: Sequence[TierDecision]) -> None:
    """Add one step's tier decisions to the episode counters."""
    stats["escalations"] += max(0, len(trail) - 1)
    for dec in trail:
        if dec.actor == "student":
            stats["student_samples"] += dec.samples
            stats["student_calls"] += int(dec.meta.get("calls", 1))
            stats["parse_failures"] += int(dec.meta.get("parse_failures", 0))
        stats["teacher_calls"] += dec.teacher_calls
        stats["cost_usd"] += dec.cost_usd


def step_counter(actor: str) -> str:
    """The counter an acted step goes to, by who chose its action."""
    if actor.startswith("fallback"):
        return "steps_fallback"
    if actor == "student":
        return "steps_student"
    if actor in TEACHER_ACTORS:
        return "steps_teacher"
    return "steps_search"


def result_from_state(values: dict[str, Any], wall: float, *, resumed: bool) -> EpisodeResult:
    """The `EpisodeResult` of a (finished) state."""
    return EpisodeResult(
        run_id=values["run_id"],
        episode_id=values["episode_id"],
        task_id=values["task_id"],
        success=bool(values.get("won")),
        score=float(values.get("score") or 0.0),
        steps=int(values.get("step") or 0),
        reason=str(values.get("reason") or ""),
        stats=dict(values.get("stats") or {}),
        budget=dict(values.get("budget") or {}),
        wall_s=wall,
        resumed=resumed,
        error=str(values.get("error") or ""),
    )


def results_teacher_share(results: Sequence[EpisodeResult]) -> float:
    """`nightowl.ledger.teacher_share` over episode results (teacher-acted / env steps)."""
    teacher = sum(int(r.stats.get("steps_teacher", 0)) for r in results)
    return teacher_share(teacher, sum(r.steps for r in results))


def checkpoint_path(home: Path) -> Path:
    """Where the loop's SQLite checkpoints live (the one place this path is decided)."""
    return home / "checkpoints.sqlite"
