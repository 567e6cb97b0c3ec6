"""Celery configuration and the job queues: app factory, payloads, and how jobs are sent.

Everything here takes the Celery app as an argument; the process-wide app that
``celery -A nightowl.workers.app`` loads lives in `nightowl.workers.app`, which also
imports the tasks (`nightowl.workers.tasks`, registered with ``shared_task``). Tasks
import this module, never the app module, so the import graph has no cycle.

Redis is the production broker and result backend (``NIGHTOWL_BROKER_URL=redis://...``).
The reliability settings are the point of this module:

- ``task_acks_late`` + ``task_reject_on_worker_lost``: a message is acknowledged only
  after its task returns, so a worker killed mid-job (even SIGKILL) leaves the message
  unacknowledged and Redis redelivers it.
- ``visibility_timeout``: how long Redis waits for the ack before redelivering (a
  sweep for expired messages runs at least every 10 s). It must exceed the longest
  job (``NIGHTOWL_SLEEP__VISIBILITY_TIMEOUT_S``, default 1 h), otherwise a long job
  still running is handed to a second worker (harmless — jobs are idempotent — but
  wasted compute).
- ``worker_prefetch_multiplier=1``: a worker reserves one job at a time, so a killed
  worker strands at most one job per process.

SQLite and filesystem brokers lose late-acked messages when a worker is SIGKILLed;
use Redis when the guarantees matter. With no broker configured nightowl does not use
Celery at all: `nightowl sleep run` runs the same jobs in-process.
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue
from pydantic import BaseModel

from nightowl.config import Settings, get_settings
from nightowl.config_sleep import GeneratorConfig

QUEUES: tuple[str, ...] = ("sleep", "demos", "index", "episodes")
ROUTES: dict[str, dict[str, str]] = {
    "nightowl.sleep.*": {"queue": "sleep"},
    "nightowl.episodes.*": {"queue": "episodes"},
    "nightowl.demos.*": {"queue": "demos"},
    "nightowl.index.*": {"queue": "index"},
}


class LearnPayload(BaseModel):
    """A sleep-time job: the context, the generator config, how often it was deferred."""

    context_id: str
    config: GeneratorConfig | None = None
    deferrals: int = 0


class ThreadRethinkPayload(BaseModel):
    """A chat thread's sleep-time job: rethink the thread into a c' (idempotent).

    ``revision`` is the thread's revision when the job was sent (for logs; the job
    rethinks whatever the thread holds when it runs); ``model`` the registry name of
    the model that thinks (default: the worker's ``student_model``).
    """

    thread_id: str
    revision: int | None = None
    model: str | None = None


def create_app(settings: Settings | None = None) -> Celery:
    """Build the Celery app from nightowl's settings (time limits from ``settings.sleep``)."""
    settings = settings or get_settings()
    sleep = settings.sleep
    broker = settings.broker_url or "memory://"
    redis = (settings.broker_url or "").startswith("redis")
    backend = settings.result_backend or (settings.broker_url if redis else None)
    app = Celery("nightowl", broker=broker, backend=backend)
    # kombu sweeps for expired unacked messages every interval x throttle seconds
    # (default 10 x 10 = 100 s); one sweep per <= 10 s (and per half the visibility
    # timeout when that is short) bounds redelivery after a worker dies to about
    # visibility_timeout + 10 s.
    transport = {
        "visibility_timeout": sleep.visibility_timeout_s,
        "unacked_restore_interval": max(1, min(10, sleep.visibility_timeout_s // 2)),
        "unacked_restore_throttle": 1,
    }
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        broker_connection_retry_on_startup=True,
        task_queues=tuple(Queue(name) for name in QUEUES),
        task_default_queue="sleep",
        task_routes=ROUTES,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_track_started=True,
        result_expires=24 * 3600,
        worker_hijack_root_logger=False,
        # every task runs under soft and hard time limits (nightowl.workers.guards)
        task_soft_time_limit=sleep.task_soft_time_limit_s,
        task_time_limit=sleep.task_time_limit_s,
        beat_schedule={
            "sleep-scan": {"task": "nightowl.sleep.scan", "schedule": sleep.scan_interval_s},
        },
    )
    return app


def enqueue_learn(context_id: str, config: GeneratorConfig | None = None, *, app: Celery) -> str:
    """Send one sleep-time job to the broker (by task name); returns the task id."""
    payload = LearnPayload(context_id=context_id, config=config)
    return str(app.send_task("nightowl.sleep.learn", args=[payload.model_dump(mode="json")]).id)


def enqueue_thread_rethink(
    thread_id: str,
    revision: int | None = None,
    *,
    model: str | None = None,
    app: Celery,
) -> str:
    """Send one chat thread's rethink to the ``sleep`` queue; returns the task id."""
    payload = ThreadRethinkPayload(thread_id=thread_id, revision=revision, model=model)
    return str(
        app.send_task("nightowl.sleep.rethink_thread", args=[payload.model_dump(mode="json")]).id
    )


class CeleryQueue:
    """The app layer's job queues over this Celery app (checks the broker once)."""

    def __init__(self, target: Celery) -> None:
        self.app = target
        self._checked = False

    def _check(self) -> None:
        from kombu.exceptions import OperationalError

        from nightowl.errors import UserError

        if self._checked:
            return
        try:
            with self.app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1)
        except (OperationalError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(
                f"cannot reach the broker {self.app.conf.broker_url}: {first} "
                "(start Redis, or run with --in-process)"
            ) from None
        self._checked = True

    def enqueue_learn(self, context_id: str, config: GeneratorConfig | None = None) -> str:
        """Send one sleep-time job (after checking the broker once)."""
        self._check()
        return enqueue_learn(context_id, config, app=self.app)

    def enqueue_thread_rethink(
        self, thread_id: str, revision: int | None = None, *, model: str | None = None
    ) -> str:
        """Send one chat thread's rethink (after checking the broker once)."""
        self._check()
        return enqueue_thread_rethink(thread_id, revision, model=model, app=self.app)

    def enqueue_episode(self, job: BaseModel) -> str:
        """Send one episode of a distributed run to the ``episodes`` queue."""
        self._check()
        return str(
            self.app.send_task("nightowl.episodes.run", args=[job.model_dump(mode="json")]).id
        )

    def resend_episode(self, payload: dict, gen: int) -> str:
        """Send an episode job again as lease generation ``gen`` (a re-queue)."""
        return str(self.app.send_task("nightowl.episodes.run", args=[{**payload, "gen": gen}]).id)

    def waiting(self, queue: str = "episodes") -> int | None:
        """Messages waiting on ``queue`` (not those a worker holds); None when unknown.

        Redis keeps no empty lists: a queue that is not found is empty.
        """
        from amqp.exceptions import ChannelError

        try:
            with self.app.connection_for_read() as conn:
                return int(conn.default_channel.queue_declare(queue=queue, passive=True)
                           .message_count)
        except ChannelError:
            return 0
        except Exception:  # noqa: BLE001 - unknown: the caller then does nothing
            return None
