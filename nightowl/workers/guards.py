"""What every Celery task checks before it works: message shape, paths, time limits.

- `parse` validates a payload with its pydantic model; a malformed message is rejected
  (`celery.exceptions.Reject`, not requeued) with a one-line log, so it never enters a
  retry loop and never reaches the task body.
- `confined` resolves a path named in a message inside the configured data home
  (``Settings.home``); anything outside it (absolute elsewhere, ``..``, a symlink out)
  is a malformed message.
- every task runs under the soft and hard time limits the Celery app sets
  (`nightowl.workers.queue`, from ``NIGHTOWL_SLEEP__TASK_SOFT_TIME_LIMIT_S`` /
  ``..._TASK_TIME_LIMIT_S``): at the soft limit the task gets `SoftTimeLimitExceeded`
  and can clean up; at the hard limit the pool kills its process and the message is
  acknowledged as failed (not redelivered).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, TypeVar

from celery.exceptions import Reject
from pydantic import BaseModel, ValidationError

log = logging.getLogger(__name__)

P = TypeVar("P", bound=BaseModel)


class MalformedMessage(Reject):
    """A message a task cannot run: rejected without requeue (dropped, logged)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, requeue=False)  # Reject keeps ``reason``

    def __str__(self) -> str:
        return self.reason

    def __reduce__(self):  # type: ignore[no-untyped-def]
        # Pickled from the pool process to the worker: rebuild from the reason alone.
        return (type(self), (self.reason,))


def parse(model: type[P], payload: Any, task: str) -> P:
    """``payload`` as ``model``, or `MalformedMessage` naming the first bad field."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "payload"
        reason = f"malformed {task} message at {where}: {first.get('msg')}"
        log.error("rejected: %s", reason)
        raise MalformedMessage(reason) from None


def confined(path: str, home: Path, task: str) -> Path:
    """``path`` resolved inside ``home`` (relative paths are taken from ``home``)."""
    root = home.expanduser().resolve()
    target = (root / Path(path).expanduser()).resolve()
    if not target.is_relative_to(root):
        reason = f"malformed {task} message: path {path!r} is outside the data home"
        log.error("rejected: %s", reason)
        raise MalformedMessage(reason)
    return target


def plain_name(name: str, task: str) -> str:
    """A model name, not a filesystem path (a message must not load files by path)."""
    if name.startswith(("/", "~", ".")) or ".." in name or "\\" in name:
        reason = f"malformed {task} message: {name!r} is a path, not a model name"
        log.error("rejected: %s", reason)
        raise MalformedMessage(reason)
    return name
