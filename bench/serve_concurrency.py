"""1 vs 4 vs 8 concurrent episodes against one `nightowl models serve smollm2` process.

    python bench/serve_concurrency.py [--episodes 8 --max-steps 5 --ladder student]

For each level a fresh model server starts on 127.0.0.1 (the embedded student, one
thread; fresh, so no level reuses another's prompt caches); a registry entry points at
it (backend "openai", api "both", echo scoring), and the same TWX coin test episodes run
with 1, 4 and 8 in flight. Reports wall time, steps/s, the throughput ratio to 1 in
flight and the latency of the student's calls (from the ledger). Prints a table and
writes bench/results/serve_concurrency.json with the CPU model and load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nightowl.agent.budget import EpisodeBudget  # noqa: E402
from nightowl.app import Nightowl, RunSpec, run_tasks  # noqa: E402
from nightowl.config import ModelCapabilities, ModelSpec, load_settings  # noqa: E402
from nightowl.envs.registry import select_tasks  # noqa: E402
from nightowl.ledger.tables import ModelCall  # noqa: E402
from nightowl.llm.dtype import cpu_model  # noqa: E402


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_server() -> tuple[int, subprocess.Popen[bytes]]:
    """`nightowl models serve smollm2` on a free port, once it answers."""
    port = _port()
    log = Path(tempfile.mkdtemp()) / "server.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "nightowl.cli.main", "models", "serve", "smollm2", "--port",
         str(port)], stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                return port, proc
        except httpx.HTTPError:
            time.sleep(1)
    proc.kill()
    raise SystemExit(f"server did not start (log: {log})")


async def main() -> None:
    """Start the server, run each concurrency level, print and write the table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("--max-steps", type=int, default=6)
    ap.add_argument("--ladder", default="student")
    ap.add_argument("--levels", default="1,4,8")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "serve_concurrency.json"))
    args = ap.parse_args()
    load0 = os.getloadavg()
    rows = []
    ids = select_tasks("twx", "test", args.episodes, game="coin")
    for level in (int(x) for x in args.levels.split(",")):
        # a fresh server per level: the same prompts must not hit the previous level's
        # prefix / score caches
        port, proc = _start_server()
        try:
            base = load_settings(home=Path(tempfile.mkdtemp(prefix="serve-conc-")))
            models = dict(base.models)
            models["served"] = ModelSpec(
                backend="openai",
                params={"base_url": f"http://127.0.0.1:{port}/v1", "model": "smollm2"},
                prices=base.models["smollm2"].prices,
                capabilities=ModelCapabilities(api="both"),
            )
            settings = base.model_copy(update={"models": models, "student_model": "served"})
            with Nightowl.open(settings) as app:
                s = await run_tasks(app, RunSpec(
                    name=f"{level} in flight", env="twx", split="test", task_ids=ids,
                    ladder=args.ladder, budget=EpisodeBudget(max_steps=args.max_steps),
                    concurrency=level))
                with app.db.sessions() as ss:
                    lat = [c.latency_s for c in ss.scalars(
                        select(ModelCall).where(ModelCall.run_id == s.run_id,
                                                ModelCall.role == "student"))]
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        steps = s.steps_per_episode * s.episodes
        rows.append({"in_flight": level, "episodes": s.episodes, "steps": steps,
                     "wall_s": s.wall_s, "steps_per_s": steps / s.wall_s,
                     "student_call_p50_s": statistics.median(lat) if lat else None,
                     "student_call_p95_s": (statistics.quantiles(lat, n=20)[18]
                                            if len(lat) >= 20 else max(lat or [0]))})
        print(json.dumps(rows[-1]), flush=True)
    for r in rows:
        r["throughput_vs_1"] = r["steps_per_s"] / rows[0]["steps_per_s"]
    machine = {"cpu": cpu_model(), "cores": os.cpu_count(), "load_before": load0,
               "load_after": os.getloadavg()}
    t = Table(title=f"{args.ladder} episodes against one `nightowl models serve smollm2` "
                    f"({machine['cpu']}, load {load0[0]:.1f} -> {machine['load_after'][0]:.1f})")
    for col in ("in flight", "episodes", "steps", "wall s", "steps/s", "x vs 1",
                "student call p50 s", "p95 s"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(str(r["in_flight"]), str(r["episodes"]), f"{r['steps']:.0f}",
                  f"{r['wall_s']:.1f}", f"{r['steps_per_s']:.2f}", f"{r['throughput_vs_1']:.2f}",
                  f"{r['student_call_p50_s']:.2f}", f"{r['student_call_p95_s']:.2f}")
    Console(width=160).print(t)
    Path(args.out).write_text(json.dumps({"machine": machine, "rows": rows, "args": vars(args)},
                                         indent=1))


if __name__ == "__main__":
    asyncio.run(main())
