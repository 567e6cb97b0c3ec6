"""Live environments for the episodes of one graph: pooled, restored by replay, guarded.

The pool is also the episode's boundary with the environment: whatever a reset or a
step raises -- `BaseException` included (Fast Downward raises `SystemExit` on a PDDL it
cannot translate; a worker thread may raise anything) -- is caught here, the instance
that failed is thrown away, and the call is tried once more on a fresh instance
(restored by replay for a step). A second failure raises `EnvError`, which the graph
records as the episode's *infrastructure error*, never as a loss. Two exceptions pass
through: `asyncio.CancelledError` (the run is being stopped) and a `KeyboardInterrupt`
in the main thread (the user's Ctrl-C); a `KeyboardInterrupt` raised inside a worker
thread comes from the engine and is caught like the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from nightowl.envs.base import Environment, Observation, Snapshot, StepResult
from nightowl.errors import EnvError

#: how many times a failed reset or step is tried again on a fresh instance
ENV_RETRIES = 1

#: runs a blocking call: inline, or in a worker thread (the graph's ``_blocking``)
Call = Callable[..., Awaitable[Any]]


class _Failed:
    """What a guarded call returns instead of raising (so a thread hands it back)."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def describe(self) -> str:
        text = " ".join(str(self.exc).split())[:200]
        return f"{type(self.exc).__name__}: {text}" if text else type(self.exc).__name__


def _guarded(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, or `_Failed` for anything it raises but a user's interrupt."""
    try:
        return fn(*args)
    except KeyboardInterrupt as exc:
        if threading.current_thread() is threading.main_thread():
            raise  # the user's Ctrl-C, not the engine's
        return _Failed(exc)
    except BaseException as exc:  # noqa: BLE001 - SystemExit & co. from engines too
        if isinstance(exc, asyncio.CancelledError):
            raise
        return _Failed(exc)


class EnvPool:
    """Reuses environment instances across episodes (one per concurrent episode).

    Args:
        factory: makes a fresh environment instance.
    """

    def __init__(self, factory: Callable[[], Environment]) -> None:
        self.factory = factory
        self._free: list[Environment] = []
        self._lock = asyncio.Lock()

    def release(self, env: Environment) -> None:
        """Give an instance back for the next episode."""
        self._free.append(env)

    async def discard(self, env: Environment | None) -> None:
        """Close an instance that failed (never pooled again); closing may fail too."""
        if env is not None:
            await asyncio.to_thread(_guarded, env.close)

    async def _fresh(self) -> Environment | _Failed:
        return await asyncio.to_thread(_guarded, self.factory)

    async def _pooled(self) -> Environment | _Failed:
        """A free instance, or a new one."""
        async with self._lock:
            if self._free:
                return self._free.pop()
        return await self._fresh()

    async def start(self, task_id: str, call: Call) -> tuple[Environment, Observation]:
        """An instance reset to ``task_id``: (instance, first observation).

        Raises:
            EnvError: the reset failed on a pooled and on a fresh instance
                ("env reset failed: ...").
        """
        failed: _Failed | None = None
        for attempt in range(ENV_RETRIES + 1):
            env = await self._pooled() if attempt == 0 else await self._fresh()
            if isinstance(env, _Failed):
                failed = env
                continue
            obs = await call(_guarded, env.reset, task_id)
            if not isinstance(obs, _Failed):
                return env, obs
            failed = obs
            await self.discard(env)
        assert failed is not None
        raise EnvError(f"env reset failed: {failed.describe()}") from failed.exc

    async def step(
        self,
        env: Environment,
        task_id: str,
        actions: Sequence[str],
        action: str,
        call: Call,
    ) -> tuple[Environment, StepResult]:
        """Step ``env`` (which has taken ``actions`` since reset) with ``action``.

        On a failure the instance is replaced by a fresh one restored to the same state
        (the recorded actions replayed) and the step is tried once more. Returns the
        instance now in use and the step's result.

        Raises:
            EnvError: the step failed twice ("env step failed: ...").
        """
        res = await call(_guarded, env.step, action)
        if not isinstance(res, _Failed):
            return env, res
        failed = res
        await self.discard(env)
        for _ in range(ENV_RETRIES):
            fresh = await self._fresh()
            if isinstance(fresh, _Failed):
                failed = fresh
                continue
            ok = await asyncio.to_thread(_guarded, _replay, fresh, task_id, tuple(actions))
            res = ok if isinstance(ok, _Failed) else await call(_guarded, fresh.step, action)
            if not isinstance(res, _Failed):
                return fresh, res
            failed = res
            await self.discard(fresh)
        raise EnvError(f"env step failed: {failed.describe()}") from failed.exc

    async def restored(self, task_id: str, actions: Sequence[str]) -> Environment:
        """An instance in the state reached by ``actions`` from ``task_id``'s start.

        Used after a restart: no model is called, the recorded actions are replayed
        (or restored in one go where the environment can snapshot).
        """
        env = await self._pooled()
        if isinstance(env, _Failed):
            raise env.exc
        ok = await asyncio.to_thread(_guarded, _replay, env, task_id, tuple(actions))
        if isinstance(ok, _Failed):
            await self.discard(env)
            raise EnvError(f"env restore failed: {ok.describe()}") from ok.exc
        return env

    def close(self) -> None:
        """Close pooled environments."""
        for env in self._free:
            with contextlib.suppress(Exception):  # closing is best effort
                env.close()
        self._free.clear()


def _replay(env: Environment, task_id: str, actions: tuple[str, ...]) -> None:
    """Bring ``env`` to the state ``actions`` reach from ``task_id``'s start."""
    if actions and env.can_snapshot:
        env.restore(Snapshot(task_id=task_id, actions=actions))
        return
    env.reset(task_id)
    for a in actions:
        env.step(a)
