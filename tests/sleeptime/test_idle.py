"""Idle probes: Prometheus text parsing and the quiet period, against a local HTTP server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from nightowl.errors import ConfigError
from nightowl.sleeptime.idle import (
    AlwaysIdle,
    NvidiaSmiProbe,
    PrometheusVllmProbe,
    build_probe,
    parse_prometheus_gauges,
)
from nightowl.sleeptime.settings import load_sleep_settings

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
    assert not reading.idle and "missing" in reading.reason
    dead = PrometheusVllmProbe("http://127.0.0.1:9/metrics", quiet_s=0.0, timeout_s=0.5)
    assert not dead.check().idle


def test_build_probe_from_settings(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    assert isinstance(build_probe(load_sleep_settings()), AlwaysIdle)
    prom = build_probe(load_sleep_settings(probe="prometheus", probe_url="http://x/metrics"))
    assert isinstance(prom, PrometheusVllmProbe) and prom.url == "http://x/metrics"
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi here
    with pytest.raises(ConfigError, match="nvidia-smi"):
        build_probe(load_sleep_settings(probe="nvidia-smi"))


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
