"""Micro-batching of concurrent requests for an in-process model (a short window).

Four episodes that each ask the embedded model for a completion at the same moment
should share one batched forward per token instead of queueing behind one lock: on a
small model per-token overhead, not arithmetic, dominates decoding, so a batch of four
costs little more than one. `RequestBatcher` does this for blocking callers (worker
threads, so it works under any event loop): the first request of a compatible kind
becomes the batch's leader, waits ``window_s`` for others (or until ``max_batch``),
takes the model lock, closes the batch (late arrivals start the next one) and runs it;
the others wait for their share of the result. At most ``max_pending`` requests wait at
once; more block until there is room (a bounded queue, so memory stays bounded).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Batch(Generic[T]):
    #: each member's item and the future its caller waits on
    slots: list[tuple[T, Future[Any]]] = field(default_factory=list)
    closed: bool = False


class RequestBatcher(Generic[T, R]):
    """Groups concurrent blocking calls with the same key into one ``run_batch`` call."""

    def __init__(
        self,
        run_batch: Callable[[Sequence[T]], Sequence[R]],
        lock: threading.Lock,
        *,
        window_s: float = 0.005,
        max_batch: int = 8,
        max_pending: int = 64,
    ) -> None:
        """Batch calls to ``run_batch`` (one result per item, in order) under ``lock``."""
        self.run_batch = run_batch
        self.lock = lock
        self.window_s = window_s
        self.max_batch = max_batch
        self.max_pending = max_pending
        #: sizes of the batches run so far (benches and tests read it)
        self.batch_sizes: list[int] = []
        self._cond = threading.Condition()
        self._open: dict[Hashable, _Batch[T]] = {}
        self._pending = 0

    def submit(self, key: Hashable, item: T) -> R:
        """Run ``item`` in a batch with concurrent items of the same ``key``; blocking."""
        future: Future[R] = Future()
        with self._cond:
            while self._pending >= self.max_pending:
                self._cond.wait()
            self._pending += 1
            batch = self._open.get(key)
            leader = batch is None
            if batch is None:
                batch = self._open[key] = _Batch()
            batch.slots.append((item, future))
            if len(batch.slots) >= self.max_batch:
                self._close(key, batch)
        if leader:
            self._lead(key, batch)
        return future.result()

    def _close(self, key: Hashable, batch: _Batch[T]) -> None:
        """Stop ``batch`` taking members (call under ``_cond``)."""
        batch.closed = True
        if self._open.get(key) is batch:
            del self._open[key]
        self._cond.notify_all()

    def _lead(self, key: Hashable, batch: _Batch[T]) -> None:
        deadline = time.monotonic() + self.window_s
        with self._cond:
            while not batch.closed and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
        # Keep collecting while an earlier batch still holds the model.
        with self.lock:
            with self._cond:
                self._close(key, batch)
            slots = list(batch.slots)
            self.batch_sizes.append(len(slots))
            results: Sequence[R] = ()
            error: BaseException | None = None
            try:
                results = self.run_batch([item for item, _ in slots])
                if len(results) != len(slots):
                    raise RuntimeError(f"run_batch gave {len(results)} results for {len(slots)}")
            except BaseException as exc:  # every member sees the failure, none hangs
                error = exc
            finally:
                with self._cond:
                    self._pending -= len(slots)
                    self._cond.notify_all()
                for i, (_, future) in enumerate(slots):
                    if error is None:
                        future.set_result(results[i])
                    else:
                        future.set_exception(error)


__all__ = ["RequestBatcher"]
