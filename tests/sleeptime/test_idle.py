"""Idle probes: Prometheus text parsing and the quiet period, against a local HTTP server;
the GPU probe's choice between NVML (a scripted fake `pynvml`) and nvidia-smi."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from nightowl.config_sleep import SleepConfig
from nightowl.errors import ConfigError
from nightowl.sleeptime.idle import (
    AlwaysIdle,
    NvidiaSmiProbe,
    NvmlProbe,
    PrometheusVllmProbe,
    build_probe,
    gpu_probe,
    parse_prometheus_gauges,
)

VLLM_TEXT = """\
# HELP vllm:num_requests_running Number of requests currently running on GPU.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{engine="0",model_name="a b"}} {r0}
vllm:num_requests_running{{engine="1",model_name="a b"}} {r1}
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{{engine="0",model_name="a b"}} {w}
vllm:num_requests_waiting_by_reason{{reason="capacity"}} 7.0
vllm:generation_tokens_total{{model_name="a b"}} 1234.0
"""


class _State:
    body = VLLM_TEXT.format(r0=0.0, r1=0.0, w=0.0)
    status = 200


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        data = _State.body.encode()
        self.send_response(_State.status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def metrics_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _State.body, _State.status = VLLM_TEXT.format(r0=0.0, r1=0.0, w=0.0), 200
    yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    server.shutdown()


def test_parse_sums_label_sets_and_ignores_similar_names() -> None:
    text = VLLM_TEXT.format(r0=2.0, r1=1.0, w=4.0)
    got = parse_prometheus_gauges(text, ("vllm:num_requests_running", "vllm:num_requests_waiting"))
    assert got == {"vllm:num_requests_running": 3.0, "vllm:num_requests_waiting": 4.0}


def test_parse_missing_metric_raises() -> None:
    with pytest.raises(ValueError, match="missing"):
        parse_prometheus_gauges("foo 1\n", ("vllm:num_requests_running",))
    with pytest.raises(ValueError, match="not Prometheus text"):
        parse_prometheus_gauges("<html>not metrics</html>", ("vllm:num_requests_running",))


def test_parse_reads_timestamps_exponents_and_a_sample_outside_its_family() -> None:
    text = (
        "# TYPE vllm:num_requests_running gauge\n"
        'vllm:num_requests_running{model_name="m"} 1e0 1700000000000\n'
        'vllm:num_requests_waiting{model_name="m"} 2.0\n'  # no TYPE line of its own
        "vllm:num_requests_running_total 9\n"
    )
    got = parse_prometheus_gauges(text, ("vllm:num_requests_running", "vllm:num_requests_waiting"))
    assert got == {"vllm:num_requests_running": 1.0, "vllm:num_requests_waiting": 2.0}


def test_prometheus_probe_needs_quiet_period(metrics_url: str) -> None:
    now = [100.0]
    probe = PrometheusVllmProbe(metrics_url, quiet_s=5.0, clock=lambda: now[0])
    _State.body = VLLM_TEXT.format(r0=0.0, r1=1.0, w=0.0)
    reading = probe.check()
    assert not reading.idle and "running=1" in reading.reason
    _State.body = VLLM_TEXT.format(r0=0.0, r1=0.0, w=0.0)
    assert not probe.check().idle  # quiet for 0 s of 5 s
    now[0] += 3
    assert not probe.check().idle
    now[0] += 2.5
    assert probe.check().idle
    _State.body = VLLM_TEXT.format(r0=0.0, r1=0.0, w=2.0)  # waiting requests: busy again
    assert not probe.check().idle
    _State.body = VLLM_TEXT.format(r0=0.0, r1=0.0, w=0.0)
    now[0] += 1
    assert not probe.check().idle  # the quiet period restarted


def test_prometheus_probe_unreachable_or_garbage_is_busy(metrics_url: str) -> None:
    probe = PrometheusVllmProbe(metrics_url, quiet_s=0.0)
    assert probe.check().idle
    _State.status = 500
    assert not probe.check().idle
    _State.status, _State.body = 200, "<html>not metrics</html>"
    reading = probe.check()
    assert not reading.idle and "not Prometheus text" in reading.reason
    _State.body = "# TYPE other gauge\nother 0\n"
    reading = probe.check()
    assert not reading.idle and "missing" in reading.reason
    dead = PrometheusVllmProbe("http://127.0.0.1:9/metrics", quiet_s=0.0, timeout_s=0.5)
    assert not dead.check().idle


def test_build_probe_from_settings(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    assert isinstance(build_probe(SleepConfig()), AlwaysIdle)
    prom = build_probe(SleepConfig(probe="prometheus", probe_url="http://x/metrics"))
    assert isinstance(prom, PrometheusVllmProbe) and prom.url == "http://x/metrics"
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi here
    monkeypatch.setitem(sys.modules, "pynvml", None)  # and no NVML: import fails
    with pytest.raises(ConfigError, match="nvidia-smi.*NVML unavailable"):
        build_probe(SleepConfig(probe="nvidia-smi"))


def test_nvidia_smi_probe_reads_utilisation(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    fake = tmp_path / "nvidia-smi"
    util = tmp_path / "util"
    util.write_text("0\n3\n")
    fake.write_text(f"#!/bin/sh\ncat {util}\n")
    fake.chmod(0o755)
    probe = NvidiaSmiProbe(max_util=10, quiet_s=0, command=str(fake))
    assert probe.check().idle
    util.write_text("0\n85\n")
    reading = probe.check()
    assert not reading.idle and "85%" in reading.reason


class FakeNvml:
    """A scripted stand-in for the `pynvml` module (no GPU on the test machine)."""

    class NVMLError(Exception):  # noqa: N818 - pynvml's name
        pass

    def __init__(self, utils: list[float], *, init_fails: bool = False) -> None:
        self.utils = utils
        self.init_fails = init_fails
        self.inits = 0
        self.read_fails = False

    def nvmlInit(self) -> None:  # noqa: N802 - pynvml's names
        self.inits += 1
        if self.init_fails:
            raise self.NVMLError("Driver Not Loaded")

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return len(self.utils)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:  # noqa: N802
        return i

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:  # noqa: N802
        if self.read_fails:
            raise self.NVMLError("GPU is lost")
        return SimpleNamespace(gpu=self.utils[handle], memory=0)


def _fake_smi(tmp_path, text: str):  # type: ignore[no-untyped-def]
    fake = tmp_path / "nvidia-smi"
    fake.write_text(f"#!/bin/sh\nprintf '{text}'\n")
    fake.chmod(0o755)
    return fake


def test_nvml_probe_reads_utilisation_and_fails_busy() -> None:
    now = [0.0]
    nvml = FakeNvml([0.0, 4.0])
    probe = NvmlProbe(max_util=10, quiet_s=5, nvml=nvml, clock=lambda: now[0])
    assert nvml.inits == 1 and not probe.check().idle  # quiet for 0 s of 5 s
    now[0] += 5
    reading = probe.check()
    assert reading.idle and "4%" in reading.reason and "NVML" in reading.reason
    nvml.utils[1] = 60.0
    reading = probe.check()
    assert not reading.idle and "60%" in reading.reason
    nvml.utils[1], nvml.read_fails = 0.0, True
    reading = probe.check()
    assert not reading.idle and "NVML failed: GPU is lost" in reading.reason
    assert not NvmlProbe(nvml=FakeNvml([]), quiet_s=0).check().idle  # no GPU listed


def test_gpu_probe_prefers_nvml_then_falls_back_to_nvidia_smi(tmp_path) -> None:  # type: ignore[no-untyped-def]
    smi = _fake_smi(tmp_path, "0\\n7\\n")
    nvml = FakeNvml([1.0])
    chosen = gpu_probe(quiet_s=0, nvml_loader=lambda: nvml, command=str(smi))
    assert isinstance(chosen, NvmlProbe) and chosen.nvml is nvml and chosen.check().idle
    # NVML importable but no driver: nvmlInit fails -> nvidia-smi.
    broken = FakeNvml([1.0], init_fails=True)
    chosen = gpu_probe(quiet_s=0, nvml_loader=lambda: broken, command=str(smi))
    assert isinstance(chosen, NvidiaSmiProbe) and broken.inits == 1
    assert chosen.check().idle and "7%" in chosen.check().reason

    # NVML not installed: `import pynvml` fails -> nvidia-smi.
    def no_nvml() -> object:
        raise ImportError("No module named 'pynvml'")

    assert isinstance(gpu_probe(nvml_loader=no_nvml, command=str(smi)), NvidiaSmiProbe)
    with pytest.raises(ConfigError, match="not on PATH.*NVML unavailable.*pynvml"):
        gpu_probe(nvml_loader=no_nvml, command=str(tmp_path / "absent"))


def test_build_probe_uses_the_real_import_path_of_pynvml(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The settings' 'nvidia-smi' probe: `import pynvml` (here the fake module) first."""
    fake = FakeNvml([2.0])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi: NVML alone must do
    probe = build_probe(SleepConfig(probe="nvidia-smi", probe_quiet_s=0))
    assert isinstance(probe, NvmlProbe) and probe.nvml is fake and probe.check().idle
    _fake_smi(tmp_path, "3\\n")
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml([2.0], init_fails=True))
    probe = build_probe(SleepConfig(probe="nvidia-smi", probe_quiet_s=0))
    assert isinstance(probe, NvidiaSmiProbe) and probe.command == "nvidia-smi"
    assert probe.check().idle and "3%" in probe.check().reason
