"""Per-action cost of the code-action sandbox on the AppWorld pack (issue 26).

    .venv/bin/python bench/sandbox.py [--rounds 3] [--base-rev 07a482b]
        [--out bench/results/sandbox.json]

Plays every pack task with the expert (the reference solution), ``--rounds`` times, through
three AppWorld workers: ``none`` -- the worker of ``--base-rev`` (agent code exec'd inside
the worker, no OS boundary), ``bwrap`` and ``fallback`` -- today's worker with
``NIGHTOWL_SANDBOX`` set to that mode. Per code action it times `AppWorldEnv.step` (wall
clock, parent side: protocol + sandbox + API calls + the pack's status check) and per
episode `reset` (which starts the episode's sandbox). Reports p50/p95 per action and per
reset, the added p50 against ``none``, and the wins (must be 21/21 each). Writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000


def _base_worker(rev: str, into: Path) -> Path:
    """The worker (and pack, and variants where ``rev`` has them) of ``rev``, from git."""
    # the last two: the names of the variants' helpers before they became private
    names = ("worker.py", "pack.py", "variants.py", "_variants_base.py", "_variants_more.py",
             "variants_base.py", "variants_more.py")
    for name in names:
        src = f"{rev}:nightowl/envs/appworld_tasks/{name}"
        required = name in ("worker.py", "pack.py")
        text = subprocess.run(["git", "show", src], cwd=REPO, capture_output=True, check=required)
        if text.returncode == 0:
            (into / name).write_bytes(text.stdout)
    return into / "worker.py"


def play(mode: str, rounds: int, worker: Path | None) -> dict[str, Any]:
    """Expert episodes over the pack; per-action and per-reset timings."""
    import nightowl.envs.appworld as aw
    from nightowl.envs.appworld_tasks import pack

    saved = aw.WORKER
    if worker is not None:
        aw.WORKER = worker
    os.environ["NIGHTOWL_SANDBOX"] = mode if mode != "none" else "auto"
    env = aw.AppWorldEnv(cache_dir=REPO / ".nightowl" / "cache" / "appworld")
    steps: list[float] = []
    resets: list[float] = []
    wins = 0
    try:
        for r in range(rounds):
            for t in pack.TASKS.values():
                t0 = time.perf_counter()
                env.reset(f"appworld/{t.name}/{t.split}/0")
                resets.append(time.perf_counter() - t0)
                res = None
                while (action := env.expert_action()) is not None:
                    t0 = time.perf_counter()
                    res = env.step(action)
                    steps.append(time.perf_counter() - t0)
                if r == 0:
                    wins += bool(res is not None and res.won)
    finally:
        env.close()
        aw.WORKER = saved
    return {
        "wins": wins,
        "tasks": len(pack.TASKS),
        "actions": len(steps),
        "step_p50_ms": _pct(steps, 0.5),
        "step_p95_ms": _pct(steps, 0.95),
        "reset_p50_ms": _pct(resets, 0.5),
        "reset_p95_ms": _pct(resets, 0.95),
        "step_mean_ms": statistics.fmean(steps) * 1000,
    }


def main() -> None:
    """Run the three modes; print a table; write JSON."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--base-rev", default="07a482b")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "sandbox.json")
    args = ap.parse_args()
    out: dict[str, Any] = {
        "machine": platform.processor() or platform.machine(),
        "cpu": _cpu(),
        "load": os.getloadavg(),
        "base_rev": args.base_rev,
        "rounds": args.rounds,
    }
    with tempfile.TemporaryDirectory() as tmp:
        base = _base_worker(args.base_rev, Path(tmp))
        for mode in ("none", "bwrap", "fallback"):
            out[mode] = play(mode, args.rounds, base if mode == "none" else None)
    for mode in ("bwrap", "fallback"):
        out[mode]["added_step_p50_ms"] = out[mode]["step_p50_ms"] - out["none"]["step_p50_ms"]
        out[mode]["added_reset_p50_ms"] = out[mode]["reset_p50_ms"] - out["none"]["reset_p50_ms"]
    print(f"{'mode':9} {'wins':>6} {'actions':>7} {'step p50':>9} {'p95':>7} "
          f"{'reset p50':>9} {'p95':>7} {'added p50':>9}")
    for mode in ("none", "bwrap", "fallback"):
        m = out[mode]
        print(f"{mode:9} {m['wins']:>3}/{m['tasks']:<2} {m['actions']:>7} "
              f"{m['step_p50_ms']:>7.1f}ms {m['step_p95_ms']:>5.1f}ms "
              f"{m['reset_p50_ms']:>7.1f}ms {m['reset_p95_ms']:>5.1f}ms "
              f"{m.get('added_step_p50_ms', 0.0):>7.1f}ms")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


if __name__ == "__main__":
    main()
