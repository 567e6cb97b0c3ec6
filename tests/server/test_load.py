"""A bounded loopback load run against `nightowl serve` with a scripted fake student
(so the run measures the server: HTTP, auth, SQL ledger writes, admission control)."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from pathlib import Path

import httpx
import pytest

from tests.server.conftest import start_server

FAKE_ENV = {
    "NIGHTOWL_MODELS__FAKE__BACKEND": "scripted",
    "NIGHTOWL_MODELS__FAKE__PARAMS__DEFAULT": "The answer is 4.",
    "NIGHTOWL_MODELS__FAKE__PARAMS__DELAY_S": "0.05",
}


async def fire(url: str, n: int, concurrency: int) -> list[tuple[int, float, str]]:
    body = {"model": "nightowl-cascade", "messages": [{"role": "user", "content": "2+2?"}]}
    sem = asyncio.Semaphore(concurrency)
    out: list[tuple[int, float, str]] = []

    async with httpx.AsyncClient(timeout=60) as client:

        async def one() -> None:
            async with sem:
                t0 = time.perf_counter()
                r = await client.post(f"{url}/chat/completions", json=body)
                out.append((r.status_code, time.perf_counter() - t0,
                            r.headers.get("retry-after", "")))

        await asyncio.gather(*[one() for _ in range(n)])
    return out


@pytest.mark.slow
def test_200_requests_at_concurrency_16(tmp_path: Path) -> None:
    env = {**os.environ, "NIGHTOWL_HOME": str(tmp_path), **FAKE_ENV}
    server = start_server(
        ["serve", "--student", "fake", "--no-auth", "--no-demos", "--n", "3",
         "--max-concurrency", "8", "--key-concurrency", "8", "--key-rate", "10000/second"],
        tmp_path / "server.log", env=env, ready="/health",
    )
    try:
        results = asyncio.run(fire(server.url, 200, 16))
        codes = [c for c, _, _ in results]
        assert len(codes) == 200
        assert all(c in (200, 429) for c in codes), sorted(set(codes))
        assert codes.count(200) >= 100
        assert all(ra == "2" for c, _, ra in results if c == 429)
        ok = sorted(t for c, t, _ in results if c == 200)
        p50, p95 = statistics.median(ok), ok[int(0.95 * (len(ok) - 1))]
        print(f"load: 200 req c=16: {codes.count(200)} ok, {codes.count(429)} 429, "
              f"p50 {p50:.3f}s p95 {p95:.3f}s")
        assert server.alive()
        metrics = httpx.get(f"{server.base}/metrics").text
        assert f'nightowl_requests_total{{status="200"}} {codes.count(200)}' in metrics
    finally:
        server.stop()


def test_client_disconnect_cancels_generation(tmp_path: Path) -> None:
    env = {**os.environ, "NIGHTOWL_HOME": str(tmp_path), **FAKE_ENV,
           "NIGHTOWL_MODELS__FAKE__PARAMS__DELAY_S": "5.0"}
    server = start_server(
        ["serve", "--student", "fake", "--no-auth", "--no-demos", "--n", "1"],
        tmp_path / "server.log", env=env, ready="/health",
    )
    try:
        body = {"messages": [{"role": "user", "content": "2+2?"}]}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{server.url}/chat/completions", json=body, timeout=0.5)
        deadline = time.monotonic() + 4.0  # well before the 5 s generation would end
        while time.monotonic() < deadline:
            metrics = httpx.get(f"{server.base}/metrics").text
            if 'nightowl_requests_total{status="499"} 1' in metrics:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"no cancelled request in metrics:\n{metrics}")
        assert "nightowl_queue_depth 0" in metrics
        r = httpx.post(f"{server.url}/chat/completions", json=body, timeout=30)
        assert r.status_code == 200
    finally:
        server.stop()


def test_serve_sleep_rethinks_idle_thread_and_next_turn_uses_it(tmp_path: Path) -> None:
    env = {**os.environ, "NIGHTOWL_HOME": str(tmp_path), **FAKE_ENV}
    server = start_server(
        ["serve", "--student", "fake", "--no-auth", "--no-demos", "--n", "1", "--sleep",
         "--sleep-idle-s", "0"], tmp_path / "server.log", env=env, ready="/health",
    )
    try:
        hdr = {"X-Nightowl-Thread": "idle-thread"}
        body = {"messages": [{"role": "user", "content": "Tom has 3 apples."}]}
        first = httpx.post(f"{server.url}/chat/completions", json=body, headers=hdr, timeout=30)
        assert first.json()["nightowl"]["learned_revision"] is None
        time.sleep(7)  # one poll of the idle loop (every 5 s) with the thread idle
        body = {"messages": [{"role": "user", "content": "How many apples?"}]}
        second = httpx.post(f"{server.url}/chat/completions", json=body, headers=hdr, timeout=30)
        ext = second.json()["nightowl"]
        assert ext["learned_revision"] == 2 and ext["revision"] == 4
    finally:
        server.stop()
