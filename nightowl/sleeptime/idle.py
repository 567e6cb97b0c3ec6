"""Idle-accelerator probes: is the serving side quiet enough for sleep-time work?

Sleep-time compute must not slow down serving. Before a job starts, and between
rounds of a running job, a probe is asked whether serving is idle:

- `PrometheusVllmProbe`: reads vLLM's Prometheus ``/metrics`` and calls serving idle
  once ``vllm:num_requests_running`` and ``vllm:num_requests_waiting`` (summed over
  all label sets) have been zero for ``quiet_s`` seconds. An unreachable or
  unparseable endpoint counts as busy: a job is deferred, never run blind.
- `NvmlProbe`: utilisation of every GPU, read through NVML (``nvidia-ml-py``, the
  ``gpu`` extra), at or below a threshold for ``quiet_s`` seconds.
- `NvidiaSmiProbe`: the same from ``nvidia-smi``'s output; the ``nvidia-smi`` probe
  setting uses it when NVML is not importable or does not initialise (`gpu_probe`).
- `AlwaysIdle`: when no probe is configured.

"For S seconds" is tracked by the probe object itself (the time it first saw quiet),
so a worker process keeps one probe per configuration (`probe_for`).
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from prometheus_client.parser import text_string_to_metric_families

from nightowl.config_sleep import SleepConfig
from nightowl.errors import ConfigError

RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"


@dataclass(frozen=True, kw_only=True)
class ProbeReading:
    """One probe answer."""

    idle: bool
    reason: str


class IdleProbe(Protocol):
    """Says whether the serving side is idle."""

    def check(self) -> ProbeReading:
        """Probe now."""
        ...


class AlwaysIdle:
    """No probe configured: always idle."""

    def check(self) -> ProbeReading:
        """Always idle."""
        return ProbeReading(idle=True, reason="no probe configured")


class _QuietTracker:
    """Turns instantaneous 'quiet now' readings into 'quiet for S seconds'."""

    def __init__(self, quiet_s: float, clock: Callable[[], float]) -> None:
        self.quiet_s = quiet_s
        self.clock = clock
        self.quiet_since: float | None = None
        self.lock = threading.Lock()

    def update(self, quiet_now: bool, detail: str) -> ProbeReading:
        now = self.clock()
        with self.lock:
            if not quiet_now:
                self.quiet_since = None
                return ProbeReading(idle=False, reason=f"busy: {detail}")
            if self.quiet_since is None:
                self.quiet_since = now
            quiet_for = now - self.quiet_since
        if quiet_for >= self.quiet_s:
            return ProbeReading(idle=True, reason=f"idle for {quiet_for:.1f}s: {detail}")
        return ProbeReading(
            idle=False, reason=f"quiet for {quiet_for:.1f}s of {self.quiet_s:g}s: {detail}"
        )


def parse_prometheus_gauges(text: str, names: tuple[str, ...]) -> dict[str, float]:
    """Sum each named metric over its label sets in Prometheus text format.

    The text is parsed by ``prometheus_client``'s parser; samples are matched by their
    exact name (``foo`` does not match ``foo_total`` or ``foo_by_reason``).

    Raises:
        ValueError: the text is not Prometheus text, or a named metric does not appear.
    """
    totals: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in names:
                    totals[sample.name] = totals.get(sample.name, 0.0) + float(sample.value)
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        raise ValueError(f"not Prometheus text ({exc})") from None
    if missing := [n for n in names if n not in totals]:
        raise ValueError(f"metrics missing: {', '.join(missing)}")
    return totals


class PrometheusVllmProbe:
    """Idle when a vLLM server has had no running or waiting requests for ``quiet_s``."""

    def __init__(
        self,
        url: str,
        quiet_s: float = 30.0,
        *,
        timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.tracker = _QuietTracker(quiet_s, clock)

    def check(self) -> ProbeReading:
        """Scrape the metrics once and update the quiet period."""
        try:
            resp = httpx.get(self.url, timeout=self.timeout_s)
            resp.raise_for_status()
            gauges = parse_prometheus_gauges(resp.text, (RUNNING, WAITING))
        except (httpx.HTTPError, ValueError, IndexError) as exc:
            # Unknown state counts as busy; the quiet period restarts.
            return self.tracker.update(False, f"cannot read {self.url}: {exc}")
        running, waiting = gauges[RUNNING], gauges[WAITING]
        detail = f"running={running:g} waiting={waiting:g}"
        return self.tracker.update(running == 0 and waiting == 0, detail)


class NvidiaSmiProbe:
    """Idle when every GPU's utilisation stayed at or below ``max_util`` for ``quiet_s``."""

    def __init__(
        self,
        max_util: float = 10.0,
        quiet_s: float = 30.0,
        *,
        command: str = "nvidia-smi",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if shutil.which(command) is None:
            raise ConfigError(f"idle probe 'nvidia-smi' configured but {command!r} is not on PATH")
        self.command = command
        self.max_util = max_util
        self.tracker = _QuietTracker(quiet_s, clock)

    def check(self) -> ProbeReading:
        """Run nvidia-smi once and update the quiet period."""
        try:
            out = subprocess.run(
                [self.command, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout
            utils = [float(v) for v in out.split()]
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            return self.tracker.update(False, f"nvidia-smi failed: {exc}")
        if not utils:
            return self.tracker.update(False, "nvidia-smi listed no GPU")
        detail = "util " + ",".join(f"{u:g}%" for u in utils)
        return self.tracker.update(max(utils) <= self.max_util, detail)


def load_nvml() -> Any:
    """The ``pynvml`` module (``nvidia-ml-py``); ImportError when it is not installed."""
    import pynvml

    return pynvml


class NvmlProbe:
    """Idle when every GPU's NVML utilisation stayed at or below ``max_util`` for ``quiet_s``.

    ``nvml`` is the ``pynvml`` module (or a stand-in with its functions); it is
    initialised here, so a machine without a driver fails at construction (the caller
    falls back to `NvidiaSmiProbe`), not at every check.
    """

    def __init__(
        self,
        max_util: float = 10.0,
        quiet_s: float = 30.0,
        *,
        nvml: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.nvml = nvml if nvml is not None else load_nvml()
        self.error: type[Exception] = getattr(self.nvml, "NVMLError", OSError)
        self.nvml.nvmlInit()
        self.handles = [
            self.nvml.nvmlDeviceGetHandleByIndex(i) for i in range(self.nvml.nvmlDeviceGetCount())
        ]
        self.max_util = max_util
        self.tracker = _QuietTracker(quiet_s, clock)

    def check(self) -> ProbeReading:
        """Read every GPU's utilisation once and update the quiet period."""
        try:
            utils = [
                float(self.nvml.nvmlDeviceGetUtilizationRates(h).gpu) for h in self.handles
            ]
        except (self.error, OSError, AttributeError, ValueError) as exc:
            return self.tracker.update(False, f"NVML failed: {exc}")
        if not utils:
            return self.tracker.update(False, "NVML listed no GPU")
        detail = "util " + ",".join(f"{u:g}%" for u in utils) + " (NVML)"
        return self.tracker.update(max(utils) <= self.max_util, detail)


def gpu_probe(
    max_util: float = 10.0,
    quiet_s: float = 30.0,
    *,
    nvml_loader: Callable[[], Any] = load_nvml,
    command: str = "nvidia-smi",
    clock: Callable[[], float] = time.monotonic,
) -> NvmlProbe | NvidiaSmiProbe:
    """`NvmlProbe` when NVML imports and initialises, else `NvidiaSmiProbe` on ``command``.

    Raises:
        ConfigError: neither NVML nor ``command`` is available.
    """
    try:
        return NvmlProbe(max_util, quiet_s, nvml=nvml_loader(), clock=clock)
    except Exception as exc:  # noqa: BLE001 - ImportError, NVMLError (no driver), ...
        why = f"NVML unavailable ({type(exc).__name__}: {exc})"
    try:
        return NvidiaSmiProbe(max_util, quiet_s, command=command, clock=clock)
    except ConfigError as exc:
        raise ConfigError(f"{exc}; {why}") from None


_probes: dict[tuple[object, ...], IdleProbe] = {}
_probes_lock = threading.Lock()


def build_probe(settings: SleepConfig) -> IdleProbe:
    """A new probe for the configured kind."""
    if settings.probe == "prometheus":
        return PrometheusVllmProbe(settings.probe_url, settings.probe_quiet_s)
    if settings.probe == "nvidia-smi":  # NVML first, the nvidia-smi command as the fallback
        return gpu_probe(settings.probe_gpu_util_max, settings.probe_quiet_s)
    return AlwaysIdle()


def probe_for(settings: SleepConfig) -> IdleProbe:
    """The process-wide probe for this configuration (keeps its quiet period)."""
    key = (settings.probe, settings.probe_url, settings.probe_quiet_s, settings.probe_gpu_util_max)
    with _probes_lock:
        if key not in _probes:
            _probes[key] = build_probe(settings)
        return _probes[key]
