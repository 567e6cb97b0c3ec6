"""Prometheus metrics of `nightowl serve`, kept and rendered by ``prometheus_client``.

Counters: ``nightowl_requests_total{status}`` (/v1/ requests by HTTP status),
``nightowl_replies_total{tier}`` (chat replies by the tier that answered) and
``nightowl_cost_usd_total``. Histogram: ``nightowl_request_latency_seconds`` (whole /v1/
requests, streams included). Gauges: ``nightowl_queue_depth`` (chat requests admitted
and not finished), also split under vLLM's names (``vllm:num_requests_running`` /
``vllm:num_requests_waiting``) so that nightowl's own idle probe
(`nightowl.sleeptime.idle.PrometheusVllmProbe`) can watch a nightowl server exactly as
it watches vLLM. ``prometheus_client`` adds a ``*_created`` timestamp per counter and
histogram series.

Each `Metrics` has its own `CollectorRegistry`, so several apps in one process (tests)
do not collide. With ``PROMETHEUS_MULTIPROC_DIR`` set (several uvicorn or gunicorn
workers; it must be set before the processes start and be emptied between runs),
values live in that directory's memory-mapped files and ``/metrics`` sums them over
all worker processes: counters and the histogram add up, the gauges are summed over
live processes (``livesum``; `close` removes a stopped worker's gauges).
"""

from __future__ import annotations

import os
import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: What `generate_latest` writes: Prometheus text 0.0.4 (prometheus_client's
#: ``CONTENT_TYPE_PLAIN_0_0_4``; its ``CONTENT_TYPE_LATEST`` differs between versions).
#: Always this format, never OpenMetrics by ``Accept``: prometheus_client's OpenMetrics
#: writer turns the ``:`` of ``vllm:num_requests_*`` into ``_`` in sample lines but not
#: in ``# TYPE`` (prometheus/client_python#1177), which would rename those gauges.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def multiprocess_dir() -> str | None:
    """The multiprocess directory when prometheus_client's multiprocess mode is on."""
    return os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower()) or None


class Metrics:
    """The server's metrics in a per-instance registry (thread-safe).

    `set_in_flight` takes this process's count of admitted chat requests; the model (the
    in-process student) works on one of them at a time: the rest count as waiting.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._lock = threading.Lock()
        r = self.registry
        self.requests = Counter(
            "nightowl_requests", "HTTP requests by status code.", ["status"], registry=r
        )
        self.replies = Counter(
            "nightowl_replies", "Chat replies by the tier that answered.", ["tier"], registry=r
        )
        self.cost = Counter("nightowl_cost_usd", "Model cost of all replies (USD).", registry=r)
        self.latency = Histogram(
            "nightowl_request_latency_seconds", "Request latency.",
            buckets=LATENCY_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "nightowl_queue_depth", "Chat requests admitted and not finished.",
            multiprocess_mode="livesum", registry=r,
        )  # fmt: skip
        self.running = Gauge(
            "vllm:num_requests_running", "Chat requests the model is working on.",
            multiprocess_mode="livesum", registry=r,
        )  # fmt: skip
        self.waiting = Gauge(
            "vllm:num_requests_waiting", "Chat requests admitted and waiting for the model.",
            multiprocess_mode="livesum", registry=r,
        )  # fmt: skip

    def request_done(self, status: int, latency_s: float) -> None:
        """Count a finished request."""
        self.requests.labels(status=str(status)).inc()
        self.latency.observe(latency_s)

    def reply(self, tier: str, cost_usd: float) -> None:
        """Count a reply and its cost."""
        self.replies.labels(tier=tier).inc()
        if cost_usd > 0:
            self.cost.inc(cost_usd)

    def set_in_flight(self, n: int) -> None:
        """Chat requests admitted and not finished (this process)."""
        with self._lock:
            running = min(n, 1)
            self.queue_depth.set(n)
            self.running.set(running)
            self.waiting.set(n - running)

    def render(self) -> bytes:
        """Prometheus text (`CONTENT_TYPE`); in multiprocess mode, of all worker processes."""
        registry = self.registry
        if multiprocess_dir() is not None:
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
        return generate_latest(registry)

    def close(self) -> None:
        """In multiprocess mode, drop this process's live gauges (the worker stops)."""
        path = multiprocess_dir()
        if path is not None:
            mark_process_dead(os.getpid(), path)
