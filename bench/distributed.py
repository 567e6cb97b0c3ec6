"""Distributed runs on loopback: 1, 2, 4 `nightowl worker` processes on one Redis.

    bash scripts/with-services.sh .venv/bin/python bench/distributed.py [--episodes 8]

For each worker count: a fresh SQLite database, N real worker processes consuming the
``episodes`` queue, one `nightowl run --via celery` of the same test tasks, and the
wall time until every episode has finished (measured from the enqueue). Two arms:
the oracle teacher alone (runtime overhead bound: no model calls) and the embedded
student (model bound). Throughput = episodes / wall; the ratio to one worker says
whether cores are the limit (this machine has 2). Prints a table, writes
bench/results/distributed.json with the CPU model and load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import select

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nightowl.config import load_settings  # noqa: E402
from nightowl.ledger.tables import Episode  # noqa: E402
from nightowl.storage import open_db  # noqa: E402


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def _env(home: Path, broker: str, student: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "PYTHONPATH": str(REPO),
        "NIGHTOWL_HOME": str(home),
        "NIGHTOWL_DATABASE_URL": f"sqlite:///{home / 'n.db'}",
        "NIGHTOWL_BROKER_URL": broker,
        "NIGHTOWL_STUDENT_MODEL": student,
        "NIGHTOWL_THREADS": "1",
        "OMP_WAIT_POLICY": "PASSIVE",
        "HF_HUB_OFFLINE": "1",
    })
    return env


def _workers(env: dict[str, str], n: int, home: Path) -> list[subprocess.Popen[bytes]]:
    procs = []
    for i in range(n):
        log = (home / f"w{i}.log").open("wb")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "nightowl.cli.main", "worker", "-Q", "episodes", "-l",
             "INFO", "-n", f"w{i}-{time.monotonic_ns()}@%h"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        ))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        logs = [(home / f"w{i}.log").read_text(errors="replace") for i in range(n)]
        if all(" ready." in t for t in logs):
            return procs
        time.sleep(0.5)
    raise SystemExit("workers did not start")


def one(broker: str, n_workers: int, ladder: str, episodes: int, max_steps: int,
        student: str) -> dict[str, Any]:
    """One measurement: N workers, one distributed run, wall until all episodes end."""
    import signal

    home = Path(tempfile.mkdtemp(prefix="nightowl-dist-"))
    env = _env(home, broker, student)
    procs = _workers(env, n_workers, home)
    db = open_db(load_settings(database_url=env["NIGHTOWL_DATABASE_URL"]))
    try:
        t0 = time.perf_counter()
        r = subprocess.run(
            [sys.executable, "-m", "nightowl.cli.main", "run", "--env", "twx", "--game", "coin",
             "--via", "celery", "--ladder", ladder, "--tasks", str(episodes),
             "--max-steps", str(max_steps)],
            cwd=REPO, env=env, capture_output=True, text=True, check=True,
        )
        m = re.search(r"run (\w+):", r.stdout)
        assert m, r.stdout
        run_id = m.group(1)
        while True:
            with db.sessions() as s:
                eps = list(s.scalars(select(Episode).where(Episode.run_id == run_id)))
            if len(eps) == episodes and all(e.status != "running" for e in eps):
                break
            if time.perf_counter() - t0 > 1800:
                raise SystemExit("timed out")
            time.sleep(0.3)
        wall = time.perf_counter() - t0
        steps = sum(e.n_steps for e in eps)
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            p.wait(timeout=60)
    return {"ladder": ladder, "workers": n_workers, "episodes": episodes, "steps": steps,
            "wall_s": wall, "episodes_per_min": 60 * episodes / wall,
            "steps_per_s": steps / wall}


def main() -> None:
    """Measure, print, write JSON."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("--max-steps", type=int, default=6)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--ladders", default="teacher,student")
    ap.add_argument("--student", default="smollm2")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "distributed.json"))
    args = ap.parse_args()
    broker = os.environ.get("NIGHTOWL_TEST_REDIS_URL")
    if not broker:
        raise SystemExit("run under scripts/with-services.sh (needs NIGHTOWL_TEST_REDIS_URL)")
    load_before = os.getloadavg()
    rows = []
    for ladder in args.ladders.split(","):
        base = None
        for n in (int(x) for x in args.workers.split(",")):
            row = one(broker, n, ladder, args.episodes, args.max_steps, args.student)
            base = base or row["episodes_per_min"]
            row["speedup_vs_1"] = row["episodes_per_min"] / base
            rows.append(row)
            print(json.dumps(row), flush=True)
    machine = {"cpu": _cpu(), "cores": os.cpu_count(), "load_before": load_before,
               "load_after": os.getloadavg()}
    t = Table(title=f"distributed run on loopback ({machine['cpu']}, {machine['cores']} cores, "
                    f"load {load_before[0]:.1f} -> {machine['load_after'][0]:.1f})")
    for col in ("ladder", "workers", "episodes", "steps", "wall s", "episodes/min", "x vs 1"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(r["ladder"], str(r["workers"]), str(r["episodes"]), str(r["steps"]),
                  f"{r['wall_s']:.1f}", f"{r['episodes_per_min']:.1f}", f"{r['speedup_vs_1']:.2f}")
    Console(width=140).print(t)
    Path(args.out).write_text(json.dumps({"machine": machine, "rows": rows,
                                          "args": vars(args)}, indent=1))


if __name__ == "__main__":
    main()
