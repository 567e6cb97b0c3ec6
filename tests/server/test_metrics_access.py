"""`nightowl serve`'s metrics (prometheus_client: names, per-app registries, multiprocess
mode across real processes) and access-log lines (the middleware over a tiny ASGI app;
the real server is in test_serve.py)."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import Receive, Scope, Send

from nightowl.server.access import ACCESS_LOGGER, configure_access_log, log_access, note
from nightowl.server.app import CountRequests
from nightowl.server.metrics import Metrics
from nightowl.sleeptime.idle import RUNNING, WAITING, parse_prometheus_gauges

#: What dashboards use: every sample name and its label names (before and after the move
#: to prometheus_client; the ``*_created`` samples are prometheus_client's addition).
CONTRACT = {
    "nightowl_requests_total": {"status"},
    "nightowl_replies_total": {"tier"},
    "nightowl_cost_usd_total": set(),
    "nightowl_request_latency_seconds_bucket": {"le"},
    "nightowl_request_latency_seconds_sum": set(),
    "nightowl_request_latency_seconds_count": set(),
    "nightowl_queue_depth": set(),
    "vllm:num_requests_running": set(),
    "vllm:num_requests_waiting": set(),
}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def test_names_labels_and_values() -> None:
    m = Metrics()
    m.request_done(200, 0.07)
    m.request_done(429, 0.01)
    m.reply("student", 0.0)
    m.reply("oracle", 0.25)
    m.set_in_flight(3)
    text = m.render().decode()
    got = samples(text)
    names = {name: {k for k, _ in labels} for name, labels in got}
    assert {n: ls for n, ls in names.items() if not n.endswith("_created")} == CONTRACT
    assert got[("nightowl_requests_total", (("status", "429"),))] == 1
    assert got[("nightowl_replies_total", (("tier", "oracle"),))] == 1
    assert got[("nightowl_cost_usd_total", ())] == 0.25
    assert got[("nightowl_request_latency_seconds_bucket", (("le", "0.05"),))] == 1
    assert got[("nightowl_request_latency_seconds_bucket", (("le", "+Inf"),))] == 2
    assert got[("nightowl_queue_depth", ())] == 3
    # one slot: one running, two waiting; the idle probe reads it like vLLM
    assert parse_prometheus_gauges(text, (RUNNING, WAITING)) == {RUNNING: 1.0, WAITING: 2.0}
    assert "# TYPE nightowl_requests_total counter" in text
    assert "# TYPE nightowl_request_latency_seconds histogram" in text
    m.set_in_flight(0)
    assert parse_prometheus_gauges(m.render().decode(), (RUNNING, WAITING)) == {
        RUNNING: 0.0, WAITING: 0.0}  # fmt: skip


def test_two_apps_in_one_process_do_not_collide() -> None:
    a, b = Metrics(), Metrics()
    a.request_done(200, 0.1)
    assert a.registry is not b.registry
    assert 'nightowl_requests_total{status="200"}' in a.render().decode()
    assert "nightowl_requests_total{" not in b.render().decode()


WORKER = textwrap.dedent(
    """
    import sys
    from nightowl.server.metrics import Metrics

    m = Metrics()
    for status in sys.argv[1].split(","):
        m.request_done(int(status), 0.2)
    m.reply("student", 0.5)
    m.set_in_flight(int(sys.argv[2]))
    if sys.argv[3] == "stop":
        m.close()  # this worker shut down: its live gauges go
    """
)


def test_multiprocess_mode_sums_worker_processes(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    env.setdefault("PYTHONPATH", str(Path(__file__).resolve().parents[2]))

    def python(*args: str) -> str:
        out = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True,
                             timeout=120, check=True)  # fmt: skip
        return out.stdout

    python("-c", WORKER, "200,429", "2", "live")  # a worker still serving, 2 in flight
    python("-c", WORKER, "200", "5", "stop")  # a worker that stopped
    text = python("-c", "import sys; from nightowl.server.metrics import Metrics; "
                        "sys.stdout.write(Metrics().render().decode())")  # fmt: skip
    got = samples(text)
    assert got[("nightowl_requests_total", (("status", "200"),))] == 2
    assert got[("nightowl_requests_total", (("status", "429"),))] == 1
    assert got[("nightowl_replies_total", (("tier", "student"),))] == 2
    assert got[("nightowl_cost_usd_total", ())] == 1.0
    assert got[("nightowl_request_latency_seconds_count", ())] == 3
    assert got[("nightowl_queue_depth", ())] == 2  # live workers only
    assert parse_prometheus_gauges(text, (RUNNING, WAITING)) == {RUNNING: 1.0, WAITING: 1.0}


# -- access log ---------------------------------------------------------------------


async def _inner(scope: Scope, receive: Receive, send: Send) -> None:
    """A tiny ASGI app: notes a key and a tier like the chat route; /v1/boom raises."""
    from starlette.requests import Request

    request = Request(scope, receive)
    if scope["path"] == "/v1/boom":
        raise RuntimeError("internal detail /etc/secret")
    note(request.state, key_id="kid123", tiers=["student", "oracle", "student"])
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def _get(app: CountRequests, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.get(path, headers={"Authorization": "Bearer no-SECRETKEY"})


async def test_middleware_logs_one_line_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    m = Metrics()
    app = CountRequests(_inner, metrics=m, retry_after=2)
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        assert (await _get(app, "/v1/chat/completions?api_key=x")).status_code == 200
        boom = await _get(app, "/v1/boom")
        assert boom.status_code == 500 and "secret" not in boom.text
        await _get(app, "/health")
    lines = [r for r in caplog.records if r.name == ACCESS_LOGGER]
    assert [r.getMessage().split(" status=")[0] for r in lines] == [
        "GET /v1/chat/completions", "GET /v1/boom", "GET /health"]  # fmt: skip
    first = lines[0]
    assert "status=200" in first.getMessage() and "key=kid123" in first.getMessage()
    assert "tier=student,oracle" in first.getMessage()
    assert first.key_id == "kid123" and first.status == 200  # type: ignore[attr-defined]
    assert first.latency_ms >= 0  # type: ignore[attr-defined]
    assert "status=500 " in lines[1].getMessage() and "key=- tier=-" in lines[1].getMessage()
    assert all("SECRETKEY" not in r.getMessage() and "api_key" not in r.getMessage()
               for r in lines)  # fmt: skip
    text = m.render().decode()
    assert 'nightowl_requests_total{status="500"} 1.0' in text  # /health is not counted
    assert "nightowl_request_latency_seconds_count 2.0" in text


async def test_access_log_off(caplog: pytest.LogCaptureFixture) -> None:
    app = CountRequests(_inner, metrics=Metrics(), retry_after=2, access_log=False)
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        assert (await _get(app, "/v1/models")).status_code == 200
    assert not [r for r in caplog.records if r.name == ACCESS_LOGGER]


def test_path_is_one_escaped_field_and_the_handler(caplog: pytest.LogCaptureFixture) -> None:
    scope = {"type": "http", "method": "GET", "path": "/v1/a\nb c", "raw_path": b"/v1/a%0Ab c",
             "client": ("10.0.0.1", 5), "state": {}}  # fmt: skip
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        log_access(scope, 404, 0.0123)
    (record,) = [r for r in caplog.records if r.name == ACCESS_LOGGER]
    assert record.getMessage() == (
        "GET /v1/a%0Ab\\x20c status=404 ms=12.3 key=- tier=- client=10.0.0.1")
    stream = io.StringIO()
    configure_access_log(True, stream)
    try:
        log_access(scope, 200, 0.001)
        configure_access_log(False)
        log_access(scope, 201, 0.001)
    finally:
        configure_access_log(False)
        logging.getLogger(ACCESS_LOGGER).propagate = True
        logging.getLogger(ACCESS_LOGGER).setLevel(logging.NOTSET)
    out = stream.getvalue().splitlines()
    assert len(out) == 1 and out[0].endswith("nightowl.access GET /v1/a%0Ab\\x20c status=200 "
                                             "ms=1.0 key=- tier=- client=10.0.0.1")
