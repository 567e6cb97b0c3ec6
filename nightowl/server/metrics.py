"""Prometheus text metrics of `nightowl serve` (no client library needed).

Counters: requests by status, replies by tier, cost in USD. A latency histogram of
whole requests. Gauges: requests in flight and waiting for the model, also under
vLLM's names (``vllm:num_requests_running`` / ``vllm:num_requests_waiting``) so that
nightowl's own idle probe (`nightowl.sleeptime.idle.PrometheusVllmProbe`) can watch a
nightowl server exactly as it watches vLLM.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


@dataclass
class Metrics:
    """Thread-safe counters rendered as Prometheus exposition text."""

    requests: Counter[str] = field(default_factory=Counter)
    tiers: Counter[str] = field(default_factory=Counter)
    cost_usd: float = 0.0
    latency_counts: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS_S))
    latency_sum: float = 0.0
    latency_n: int = 0
    in_flight: int = 0
    #: requests the model can work on at once (1 for the in-process student)
    slots: int = 1
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def request_done(self, status: int, latency_s: float) -> None:
        """Count a finished request."""
        with self._lock:
            self.requests[str(status)] += 1
            self.latency_sum += latency_s
            self.latency_n += 1
            for i, bound in enumerate(LATENCY_BUCKETS_S):
                if latency_s <= bound:
                    self.latency_counts[i] += 1

    def reply(self, tier: str, cost_usd: float) -> None:
        """Count a reply and its cost."""
        with self._lock:
            self.tiers[tier] += 1
            self.cost_usd += cost_usd

    def render(self) -> str:
        """Prometheus text format 0.0.4."""
        with self._lock:
            running = min(self.in_flight, self.slots)
            waiting = self.in_flight - running
            lines = [
                "# HELP nightowl_requests_total HTTP requests by status code.",
                "# TYPE nightowl_requests_total counter",
            ]
            lines += [
                f'nightowl_requests_total{{status="{s}"}} {n}'
                for s, n in sorted(self.requests.items())
            ]
            lines += [
                "# HELP nightowl_replies_total Chat replies by the tier that answered.",
                "# TYPE nightowl_replies_total counter",
            ]
            lines += [
                f'nightowl_replies_total{{tier="{t}"}} {n}' for t, n in sorted(self.tiers.items())
            ]
            lines += [
                "# HELP nightowl_cost_usd_total Model cost of all replies (USD).",
                "# TYPE nightowl_cost_usd_total counter",
                f"nightowl_cost_usd_total {self.cost_usd:.10f}",
                "# HELP nightowl_request_latency_seconds Request latency.",
                "# TYPE nightowl_request_latency_seconds histogram",
            ]
            for bound, n in zip(LATENCY_BUCKETS_S, self.latency_counts, strict=True):
                lines.append(f'nightowl_request_latency_seconds_bucket{{le="{bound}"}} {n}')
            lines += [
                f'nightowl_request_latency_seconds_bucket{{le="+Inf"}} {self.latency_n}',
                f"nightowl_request_latency_seconds_sum {self.latency_sum:.6f}",
                f"nightowl_request_latency_seconds_count {self.latency_n}",
                "# HELP nightowl_queue_depth Chat requests admitted and not finished.",
                "# TYPE nightowl_queue_depth gauge",
                f"nightowl_queue_depth {self.in_flight}",
                "# TYPE vllm:num_requests_running gauge",
                f"vllm:num_requests_running {running}",
                "# TYPE vllm:num_requests_waiting gauge",
                f"vllm:num_requests_waiting {waiting}",
            ]
        return "\n".join(lines) + "\n"
