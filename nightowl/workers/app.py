"""The process-wide Celery app, with nightowl's tasks registered on it.

Start a worker with ``nightowl worker`` or ``celery -A nightowl.workers.app worker``.
The factory, payloads and reliability settings are in `nightowl.workers.queue`.
"""

from __future__ import annotations

from nightowl.workers import tasks  # noqa: F401 - registers the shared tasks on the app
from nightowl.workers.queue import (
    QUEUES,
    ROUTES,
    CeleryQueue,
    LearnPayload,
    create_app,
    enqueue_learn,
)

__all__ = [
    "QUEUES",
    "ROUTES",
    "CeleryQueue",
    "LearnPayload",
    "app",
    "create_app",
    "default_queue",
    "enqueue_learn",
]

#: the process-wide app (``celery -A nightowl.workers.app``)
app = create_app()


def default_queue() -> CeleryQueue:
    """The job queues over the process-wide app (what the CLI and servers send to)."""
    return CeleryQueue(app)
