"""Task ids: ``<env>/<game>/<split>/<seed>``, e.g. ``twx/coin/test/20003``.

The syntax only; which environment names exist is the registry's business
(`nightowl.envs.registry.parse_task_id` checks the name too). Adapters use these
functions and compare the environment part with their own name.
"""

from __future__ import annotations

from typing import Any

from nightowl.envs.base import SPLITS, Split, TaskSpec
from nightowl.errors import UnknownNameError


def parse_task_id(task_id: str) -> tuple[str, str, Split, int]:
    """Split ``<env>/<game>/<split>/<seed>`` into its parts (the environment unchecked).

    Raises:
        UnknownNameError: malformed id, unknown split or a seed that is not an integer.
    """
    parts = task_id.split("/") if isinstance(task_id, str) else []
    if len(parts) != 4 or not all(parts):
        raise UnknownNameError("task id (expected <env>/<game>/<split>/<seed>)", str(task_id))
    env, game, split, seed = parts
    if split not in SPLITS:
        raise UnknownNameError(f"split in task id {task_id!r}", split, list(SPLITS))
    try:
        seed_int = int(seed)
    except ValueError:
        raise UnknownNameError(f"seed in task id {task_id!r} (an integer)", seed) from None
    return env, game, split, seed_int  # type: ignore[return-value]


def format_task_id(env: str, game: str, split: Split, seed: int) -> str:
    """The inverse of `parse_task_id`."""
    return f"{env}/{game}/{split}/{seed}"


def task_spec(env: str, game: str, split: Split, seed: int, params: dict[str, Any]) -> TaskSpec:
    """The `TaskSpec` of ``<env>/<game>/<split>/<seed>``, with its generation ``params``."""
    return TaskSpec(
        task_id=format_task_id(env, game, split, seed),
        env=env,
        split=split,
        game=game,
        seed=seed,
        params=params,
    )
