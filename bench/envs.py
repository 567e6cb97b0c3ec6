"""Environment adapter benchmark: reset time, steps/s, restore cost, off-path expert cost.

    .venv/bin/python bench/envs.py [--out bench/results/envs.json] [--quick]

Per adapter (twx, tw, sciworld): the cold first reset (JVM start / game load), the mean
warm reset over several tasks, steps/s of `step()` alone and of whole expert episodes
(expert_action + step), the time to restore a mid-episode snapshot by replay (and
natively, for TextWorld), and for twx the cost of the first expert call after a
deviation (the bounded re-plan). TextWorld games come from the cache used by the tests;
games not yet cached are generated first and that time is reported separately.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from nightowl.envs.base import Snapshot
from nightowl.envs.common import ReplayEnvironment
from nightowl.envs.registry import make_env

REPO = Path(__file__).resolve().parents[1]

TASKS: dict[str, list[str]] = {
    "twx": [f"twx/{g}/test/{s}" for g in ("coin", "cookingworld", "twc", "mapreader",
                                         "arithmetic", "sorting", "simonsays", "peckingorder")
            for s in (20000, 20001, 20002)],
    "tw": [
        "tw/coin_collector/test/20000",
        "tw/treasure_hunter/test/20000",
        "tw/cooking/test/20000",
        "tw/simple/test/20000",
    ],
    "sciworld": [
        "sciworld/lifespan-longest-lived/test/93",
        "sciworld/find-animal/test/225",
        "sciworld/identify-life-stages-1/test/9",
        "sciworld/boil/test/21",
    ],
}


def _env(name: str) -> ReplayEnvironment:
    kwargs: dict[str, Any] = {"max_steps": 200}
    if name == "tw":
        kwargs["native_snapshots"] = True  # so that both restore paths are measured
        kwargs["cache_dir"] = Path(
            os.environ.get("NIGHTOWL_TEST_TW_CACHE", REPO / ".nightowl" / "cache" / "textworld")
        )
    env = make_env(name, **kwargs)
    assert isinstance(env, ReplayEnvironment)
    return env


def bench_adapter(name: str, tasks: list[str]) -> dict[str, Any]:
    env = _env(name)
    out: dict[str, Any] = {"tasks": tasks}
    if name == "tw":  # generate what is missing, outside the timed resets
        gen = {}
        tw: Any = env
        for task in tasks:
            t0 = time.perf_counter()
            tw.game_file(task)
            dt = time.perf_counter() - t0
            if dt > 0.5:
                gen[task] = round(dt, 2)
        out["generate_s"] = gen
    t0 = time.perf_counter()
    env.reset(tasks[0])
    out["cold_reset_s"] = round(time.perf_counter() - t0, 3)
    resets, step_times, episode_steps, episode_time, wins = [], [], 0, 0.0, 0
    restore_replay, restore_native, replay_len, snapshot_take = [], [], [], []
    for task in tasks:
        t0 = time.perf_counter()
        env.reset(task)
        resets.append(time.perf_counter() - t0)
        t_ep = time.perf_counter()
        snap: Snapshot | None = None
        res = None
        for i in range(200):
            action = env.expert_action()
            if action is None:
                break
            t1 = time.perf_counter()
            res = env.step(action)
            step_times.append(time.perf_counter() - t1)
            episode_steps += 1
            if res.done:
                break
            if snap is None and i >= 2:
                t1 = time.perf_counter()
                snap = env.snapshot()
                snapshot_take.append(time.perf_counter() - t1)
        episode_time += time.perf_counter() - t_ep - (snapshot_take[-1] if snap else 0.0)
        wins += int(bool(res and res.won))
        if snap is not None:
            t0 = time.perf_counter()
            ReplayEnvironment.restore(env, Snapshot(task_id=snap.task_id, actions=snap.actions))
            restore_replay.append(time.perf_counter() - t0)
            replay_len.append(len(snap.actions))
            if snap.native is not None:
                t0 = time.perf_counter()
                env.restore(snap)
                restore_native.append(time.perf_counter() - t0)
    out.update(
        reset_mean_s=round(statistics.mean(resets), 4),
        reset_max_s=round(max(resets), 4),
        step_ms_median=round(1000 * statistics.median(step_times), 3),
        steps_per_s=round(len(step_times) / sum(step_times), 1),
        expert_episode_steps_per_s=round(episode_steps / episode_time, 1),
        expert_wins=f"{wins}/{len(tasks)}",
        restore_replay_s=round(statistics.mean(restore_replay), 4) if restore_replay else None,
        restore_replay_actions=round(statistics.mean(replay_len), 1) if replay_len else None,
        restore_native_s=round(statistics.mean(restore_native), 4) if restore_native else None,
        snapshot_s=round(statistics.mean(snapshot_take), 4) if snapshot_take else None,
    )
    if name == "twx":
        out["offpath_replan_s"] = _twx_offpath(env)
    env.close()
    return out


def _twx_offpath(env: Any) -> float:
    """Mean time of the first expert call after one wrong move (bounded re-plan)."""
    cases = [
        ("twx/cookingworld/test/20000", "move east"),
        ("twx/coin/test/20001", "move north"),
        ("twx/twc/test/20001", "move north"),
        ("twx/sorting/test/20001", "take 18ml of aluminum"),
    ]
    times = []
    for task, wrong in cases:
        env.reset(task)
        env.step(wrong)
        t0 = time.perf_counter()
        env.expert_action()
        times.append(time.perf_counter() - t0)
    return round(statistics.mean(times), 4)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "envs.json"))
    ap.add_argument("--quick", action="store_true", help="fewer tasks per adapter")
    ap.add_argument("--only", nargs="*", choices=list(TASKS), default=list(TASKS))
    args = ap.parse_args()
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
        },
        "adapters": {},
    }
    for name in args.only:
        tasks = TASKS[name][: (4 if name == "twx" else 2)] if args.quick else TASKS[name]
        results["adapters"][name] = bench_adapter(name, tasks)
    results["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]

    table = Table(title="environment adapters")
    cols = ["adapter", "tasks", "cold reset s", "reset s (mean)", "step ms (median)",
            "steps/s", "expert ep. steps/s", "expert wins", "restore by replay s (actions)",
            "snapshot s", "native restore s"]
    for c in cols:
        table.add_column(c, justify="left" if c == "adapter" else "right")
    for name, r in results["adapters"].items():
        replay = (f"{r['restore_replay_s']} ({r['restore_replay_actions']})"
                  if r["restore_replay_s"] is not None else "-")
        table.add_row(name, str(len(r["tasks"])), str(r["cold_reset_s"]), str(r["reset_mean_s"]),
                      str(r["step_ms_median"]), str(r["steps_per_s"]),
                      str(r["expert_episode_steps_per_s"]), r["expert_wins"], replay,
                      str(r["snapshot_s"]), str(r["restore_native_s"] or "-"))
    console = Console(width=160)
    console.print(table)
    if "twx" in results["adapters"]:
        console.print(f"twx off-path expert (first call after a wrong move, bounded re-plan): "
                      f"{results['adapters']['twx']['offpath_replan_s']} s mean")
    if "tw" in results["adapters"] and results["adapters"]["tw"].get("generate_s"):
        console.print(f"tw games generated first (s): {results['adapters']['tw']['generate_s']}")
    console.print(f"machine: {results['machine']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
