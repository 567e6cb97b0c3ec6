"""Concurrency conformance: an adapter plays the same episodes at concurrency 4 as at 1.

`outcomes_at` runs the oracle teacher over a task list through the real use case
(`run_tasks`: the LangGraph loop, the environment pool, the ledger) and returns each
task's (won, steps, error, actions). An adapter whose engine is not thread-safe loses
episodes at reset, or plays different moves, only when episodes run at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nightowl.agent.budget import EpisodeBudget
from nightowl.app import Nightowl, RunSpec, run_tasks
from nightowl.config import load_settings
from nightowl.memory.embedder import HashingEmbedder

Outcome = tuple[bool, int, str, tuple[str, ...]]


async def outcomes_at(
    home: Path,
    env: str,
    task_ids: Sequence[str],
    concurrency: int,
    *,
    max_steps: int = 50,
    env_kwargs: dict[str, Any] | None = None,
) -> dict[str, Outcome]:
    """task id -> (won, steps, infrastructure error, actions) of a teacher-only run."""
    settings = load_settings(home=home)
    spec = RunSpec(
        name=f"c{concurrency}", env=env, split=task_ids[0].split("/")[2],
        task_ids=list(task_ids), ladder="teacher", budget=EpisodeBudget(max_steps=max_steps),
        concurrency=concurrency, store_escalations=False, env_kwargs=dict(env_kwargs or {}),
    )
    with Nightowl.open(settings, embedder=HashingEmbedder()) as app:
        summary = await run_tasks(app, spec)
        out: dict[str, Outcome] = {}
        for ep in summary.episodes_detail:
            steps = app.memory.episode_steps(ep["episode_id"])
            out[ep["task_id"]] = (
                bool(ep["success"]), int(ep["steps"]), str(ep["error"]),
                tuple(s.action for s in steps),
            )
    return out


async def check_concurrent_matches_serial(
    tmp_path: Path,
    env: str,
    task_ids: Sequence[str],
    *,
    concurrency: int = 4,
    max_steps: int = 50,
    env_kwargs: dict[str, Any] | None = None,
    random_expert: Sequence[str] = (),
) -> dict[str, Outcome]:
    """Assert equal outcomes at ``concurrency`` and at 1, no errors; returns them.

    Every task must end the same way (won or lost, no infrastructure error); the moves
    too, except for the tasks in ``random_expert``, whose expert draws from an engine RNG
    shared by the whole process (TWX coin's gold path is a random walk), so its moves
    depend on the order of every engine call, serial runs included.
    """
    serial = await outcomes_at(
        tmp_path / "serial", env, task_ids, 1, max_steps=max_steps, env_kwargs=env_kwargs
    )
    parallel = await outcomes_at(
        tmp_path / "parallel", env, task_ids, concurrency, max_steps=max_steps,
        env_kwargs=env_kwargs,
    )
    assert set(serial) == set(task_ids)
    assert not [e for (_, _, e, _) in serial.values() if e], serial
    assert set(parallel) == set(serial)
    for task, (won, steps, error, actions) in serial.items():
        p_won, p_steps, p_error, p_actions = parallel[task]
        assert (p_won, p_error) == (won, error), task
        if task not in random_expert:
            assert (p_steps, p_actions) == (steps, actions), task
    return serial
