"""Per-key fairness of `nightowl serve` (issue: one key took every slot): a real server
process with a scripted slow student (so the run measures admission, not a model).

One key firing many concurrent requests gets its own share and 429s beyond it, while a
second key of another tenant is still served; a key over its rate is turned away with
``Retry-After`` before any SQL lookup.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.server.conftest import start_server

SLOW = {
    "NIGHTOWL_MODELS__FAKE__BACKEND": "scripted",
    "NIGHTOWL_MODELS__FAKE__PARAMS__DEFAULT": "The answer is 4.",
    "NIGHTOWL_MODELS__FAKE__PARAMS__DELAY_S": "1.0",
}
BODY = {"messages": [{"role": "user", "content": "2+2?"}]}


def _key(env: dict[str, str], name: str, tenant: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "nightowl.cli.main", "keys", "create", name, "--tenant", tenant],
        env=env, capture_output=True, text=True, timeout=120, check=True,
    )
    return out.stdout.strip()


async def _burst(url: str, key: str, n: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=60, headers={"Authorization": f"Bearer {key}"}) as c:
        return list(await asyncio.gather(
            *[c.post(f"{url}/chat/completions", json=BODY) for _ in range(n)]))


def test_one_key_cannot_take_every_slot(tmp_path: Path) -> None:
    env = {**os.environ, "NIGHTOWL_HOME": str(tmp_path), **SLOW}
    greedy, polite = _key(env, "greedy", "a"), _key(env, "polite", "b")
    server = start_server(
        ["serve", "--student", "fake", "--no-demos", "--n", "1", "--max-concurrency", "8",
         "--key-concurrency", "3", "--key-rate", "1000/second"],
        tmp_path / "server.log", env=env, ready="/health",
    )
    try:
        async def both() -> tuple[list[httpx.Response], list[httpx.Response]]:
            flood = asyncio.create_task(_burst(server.url, greedy, 12))
            await asyncio.sleep(0.3)  # the flood holds its slots (each reply takes 1 s)
            fair = await _burst(server.url, polite, 2)
            return await flood, fair

        flood, fair = asyncio.run(both())
        codes = [r.status_code for r in flood]
        assert codes.count(200) == 3 and codes.count(429) == 9, codes
        refused = next(r for r in flood if r.status_code == 429)
        assert refused.headers["retry-after"] == "2"
        assert "this key has 3 requests in flight" in refused.json()["error"]["message"]
        assert [r.status_code for r in fair] == [200, 200]
    finally:
        server.stop()


def test_key_over_its_rate_gets_429_with_retry_after(tmp_path: Path) -> None:
    env = {**os.environ, "NIGHTOWL_HOME": str(tmp_path), **SLOW,
           "NIGHTOWL_MODELS__FAKE__PARAMS__DELAY_S": "0.0"}
    key = _key(env, "chatty", "a")
    server = start_server(
        ["serve", "--student", "fake", "--no-demos", "--n", "1", "--key-rate", "3/minute"],
        tmp_path / "server.log", env=env, ready="/health",
    )
    try:
        hdr = {"Authorization": f"Bearer {key}"}
        codes = [httpx.post(f"{server.url}/chat/completions", json=BODY, headers=hdr,
                            timeout=60) for _ in range(4)]
        assert [r.status_code for r in codes] == [200, 200, 200, 429]
        last = codes[-1]
        assert 1 <= int(last.headers["retry-after"]) <= 60
        assert "rate limit of this key" in last.json()["error"]["message"]
        # Unknown tokens are rate-counted by their hash too, before any database lookup.
        r = httpx.post(f"{server.url}/chat/completions", json=BODY,
                       headers={"Authorization": "Bearer nope"}, timeout=60)
        assert r.status_code == 401
    finally:
        server.stop()
