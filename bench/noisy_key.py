"""Noisy neighbour: does one key flooding `nightowl serve` slow another key down?

A real ``nightowl serve`` process with a scripted student that takes ``--delay`` seconds
per reply (so the run measures admission and scheduling, not a model). Two keys of two
tenants. Phase "alone": the polite key sends ``--requests`` chat completions,
``--concurrency`` at a time. Phase "flooded": the same, while the greedy key sends
``--flood`` x its per-key rate limit (10x by default, open loop: it does not wait for
answers or honour ``Retry-After``) for the whole phase. Reported: the polite key's
p50/p95 latency in both phases and their ratio, and what the greedy key got (200s and
429s). Prints a table and writes JSON.

    python bench/noisy_key.py [--requests 200] [--key-rate 20] [--flood 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
BODY = {"messages": [{"role": "user", "content": "2+2?"}]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(env: dict[str, str], *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "nightowl.cli.main", *args],
        env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return out.stdout.strip()


def start(env: dict[str, str], args: list[str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "nightowl.cli.main", "serve", *args, "--port", str(port)],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-1500:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code < 500:
                return proc, url + "/v1"
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError("server did not start")


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[int(q * (len(s) - 1))] if s else float("nan")


async def polite_run(url: str, key: str, n: int, concurrency: int) -> dict[str, Any]:
    lat: list[float] = []
    codes: dict[int, int] = {}
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=60, headers={"Authorization": f"Bearer {key}"}) as c:

        async def one() -> None:
            async with sem:
                t = time.perf_counter()
                r = await c.post(f"{url}/chat/completions", json=BODY)
                lat.append(time.perf_counter() - t)
                codes[r.status_code] = codes.get(r.status_code, 0) + 1

        await asyncio.gather(*(one() for _ in range(n)))
    return {"p50_ms": pct(lat, 0.5) * 1000, "p95_ms": pct(lat, 0.95) * 1000, "codes": codes}


async def flood_run(url: str, key: str, rate: float, stop: asyncio.Event) -> dict[int, int]:
    """Open loop: one request every 1/rate seconds, whatever came back (a rude client)."""
    codes: dict[int, int] = {}
    async with httpx.AsyncClient(
        timeout=60, headers={"Authorization": f"Bearer {key}"},
        limits=httpx.Limits(max_connections=200),
    ) as c:  # fmt: skip

        async def one() -> None:
            r = await c.post(f"{url}/chat/completions", json=BODY)
            codes[r.status_code] = codes.get(r.status_code, 0) + 1

        tasks: list[asyncio.Task[None]] = []
        start = time.perf_counter()
        sent = 0
        while not stop.is_set():
            due = int((time.perf_counter() - start) * rate)
            for _ in range(due - sent):
                tasks.append(asyncio.create_task(one()))
            sent = max(sent, due)
            await asyncio.sleep(0.005)
        await asyncio.gather(*tasks, return_exceptions=True)
    return codes


async def measure(url: str, polite: str, greedy: str, args: argparse.Namespace) -> dict[str, Any]:
    await polite_run(url, polite, 20, args.concurrency)  # warm-up
    alone = await polite_run(url, polite, args.requests, args.concurrency)
    stop = asyncio.Event()
    flood = asyncio.create_task(flood_run(url, greedy, args.flood * args.key_rate, stop))
    await asyncio.sleep(0.5)
    flooded = await polite_run(url, polite, args.requests, args.concurrency)
    stop.set()
    greedy_codes = await flood
    return {"alone": alone, "flooded": flooded, "greedy_codes": greedy_codes}


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=1, help="the polite key's")
    ap.add_argument("--key-rate", type=float, default=20, help="serve --key-rate, per second")
    ap.add_argument("--key-concurrency", type=int, default=4, help="serve --key-concurrency")
    ap.add_argument("--max-concurrency", type=int, default=16, help="serve --max-concurrency")
    ap.add_argument("--flood", type=int, default=10, help="the greedy key sends this x its rate")
    ap.add_argument("--delay", type=float, default=0.05, help="scripted reply seconds")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "noisy_key.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="nightowl-noisy-") as home:
        env = {
            **os.environ, "NIGHTOWL_HOME": home, "PYTHONPATH": str(ROOT),
            "NIGHTOWL_MODELS__FAKE__BACKEND": "scripted",
            "NIGHTOWL_MODELS__FAKE__PARAMS__DEFAULT": "The answer is 4.",
            "NIGHTOWL_MODELS__FAKE__PARAMS__DELAY_S": str(args.delay),
        }  # fmt: skip
        polite = cli(env, "keys", "create", "polite", "--tenant", "a")
        greedy = cli(env, "keys", "create", "greedy", "--tenant", "b")
        proc, url = start(env, [
            "--student", "fake", "--no-demos", "--n", "1",
            "--max-concurrency", str(args.max_concurrency),
            "--key-concurrency", str(args.key_concurrency),
            "--key-rate", f"{args.key_rate:g}/second",
        ], Path(home) / "server.log")  # fmt: skip
        load0 = os.getloadavg()[0]
        try:
            res = asyncio.run(measure(url, polite, greedy, args))
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
    ratio = res["flooded"]["p95_ms"] / res["alone"]["p95_ms"]
    res.update(
        ratio_p95=ratio, args=vars(args), load_1min=load0,
        cpu=next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text()
                  .splitlines() if ln.startswith("model name")), "?"),
    )  # fmt: skip
    print(
        f"polite key, {args.requests} requests at concurrency {args.concurrency}; greedy key "
        f"sends {args.flood}x its rate limit of {args.key_rate:g}/s "
        f"({res['cpu']}, load {load0:.1f})"
    )
    print(f"{'phase':<10} {'p50 ms':>8} {'p95 ms':>8}  statuses")
    for phase in ("alone", "flooded"):
        r = res[phase]
        print(f"{phase:<10} {r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f}  {r['codes']}")
    print(f"greedy key statuses: {res['greedy_codes']}")
    print(f"p95 flooded / alone: {ratio:.2f}x (goal <= 1.5x)")
    Path(args.out).write_text(json.dumps(res, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
