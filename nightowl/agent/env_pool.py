"""Live environments for the episodes of one graph: pooled, restored by replay."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from nightowl.envs.base import Environment, Snapshot


class EnvPool:
    """Reuses environment instances across episodes (one per concurrent episode).

    Args:
        factory: makes a fresh environment instance.
    """

    def __init__(self, factory: Callable[[], Environment]) -> None:
        self.factory = factory
        self._free: list[Environment] = []
        self._lock = asyncio.Lock()

    async def acquire(self) -> Environment:
        """A free instance, or a new one."""
        async with self._lock:
            if self._free:
                return self._free.pop()
        return await asyncio.to_thread(self.factory)

    def release(self, env: Environment) -> None:
        """Give an instance back for the next episode."""
        self._free.append(env)

    async def restored(self, task_id: str, actions: Sequence[str]) -> Environment:
        """An instance in the state reached by ``actions`` from ``task_id``'s start.

        Used after a restart: no model is called, the recorded actions are replayed
        (or restored in one go where the environment can snapshot).
        """
        env = await self.acquire()
        if actions and env.can_snapshot:
            await asyncio.to_thread(env.restore, Snapshot(task_id=task_id, actions=tuple(actions)))
            return env
        await asyncio.to_thread(env.reset, task_id)
        for a in actions:
            await asyncio.to_thread(env.step, a)
        return env

    def close(self) -> None:
        """Close pooled environments."""
        for env in self._free:
            try:
                env.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
        self._free.clear()
