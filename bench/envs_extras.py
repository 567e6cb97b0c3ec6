"""Extras benchmark (ALFWorld, AppWorld): reset time, steps/s, expert success, generator yield.

    .venv/bin/python bench/envs_extras.py [--per-type 10] [--planner-per-type 3]
        [--out bench/results/envs_extras.json]

ALFWorld: for each of the six task types, the first ``--per-type`` generated test games
(seeds 20000..; generated on first use into ``.nightowl/cache/alfworld``, the tests'
cache). Reported: generation time of games not yet cached, the generator's yield
(kept games / candidates drawn: a candidate is kept only if the PDDL planner and the
handcoded expert both solve it), distinct games (distinct PDDL problems), the
handcoded expert's success replayed through the adapter (in this process; the
generator's check ran when the game was made), the planner expert's success on a
subset, warm reset time, steps/s of `step()` and of expert episodes, and the time to
restore a mid-episode snapshot by replay.

AppWorld: the worker's load time, reset time (restore the base world + task set-up),
steps/s of code actions over expert episodes, the reference solutions' success on all
pack tasks, and the restore-by-replay time. Prints a table; writes JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
TYPES = ("pick", "look", "clean", "heat", "cool", "pick2")


def _expert_episode(env: Any, task_id: str, max_steps: int) -> tuple[bool, int, float, float]:
    """(won, steps, seconds in step(), seconds in expert_action + step)."""
    env.reset(task_id)
    t0 = time.perf_counter()
    step_s = 0.0
    res = None
    n = 0
    for n in range(1, max_steps + 1):
        action = env.expert_action()
        if action is None:
            n -= 1
            break
        t1 = time.perf_counter()
        res = env.step(action)
        step_s += time.perf_counter() - t1
        if res.done:
            break
    return bool(res and res.won), n, step_s, time.perf_counter() - t0


def bench_alfworld(per_type: int, planner_per_type: int) -> dict[str, Any]:
    from nightowl.envs import alfworld_gen
    from nightowl.envs.alfworld import AlfWorldEnv

    cache = REPO / ".nightowl" / "cache" / "alfworld"
    env = AlfWorldEnv(cache_dir=cache)
    out: dict[str, Any] = {"per_type": {}, "cache": str(cache)}
    all_resets: list[float] = []
    for game in TYPES:
        ids = [f"alfworld/{game}/test/{s}" for s in range(20000, 20000 + per_type)]
        gen_s, attempts, problems, failed_gen = [], 0, set(), 0
        for tid in ids:
            spec = env.spec(tid)
            folder = alfworld_gen.game_dir(env.games_dir, game, "test", spec.seed)
            cached = (folder / "game.tw-pddl").exists()
            t0 = time.perf_counter()
            try:
                gamefile = env.gamefile(spec)
            except RuntimeError:
                failed_gen += 1
                attempts += 12
                continue
            if not cached:
                gen_s.append(time.perf_counter() - t0)
            traj = json.loads((folder / "traj_data.json").read_text())
            attempts += traj["nightowl"]["attempt"] + 1
            problems.add(
                hashlib.sha1(json.loads(gamefile.read_text())["pddl_problem"].encode()).hexdigest()
            )
        ok_ids = [
            t
            for t in ids
            if (
                alfworld_gen.game_dir(env.games_dir, game, "test", int(t.rsplit("/", 1)[1]))
                / "game.tw-pddl"
            ).exists()
        ]
        wins, steps, step_s, ep_s, resets = 0, 0, 0.0, 0.0, []
        for tid in ok_ids:
            t0 = time.perf_counter()
            env.reset(tid)
            resets.append(time.perf_counter() - t0)
            won, n, s_step, s_ep = _expert_episode(env, tid, 50)
            wins += won
            steps += n
            step_s += s_step
            ep_s += s_ep
        all_resets += resets
        planner = AlfWorldEnv(cache_dir=cache, expert="planner")
        p_ids = ok_ids[:planner_per_type]
        p_wins = sum(_expert_episode(planner, tid, 30)[0] for tid in p_ids)
        planner.close()
        restore_s = None
        if ok_ids:
            env.reset(ok_ids[0])
            for _ in range(5):
                env.step(env.expert_action())
            snap = env.snapshot()
            t0 = time.perf_counter()
            env.restore(snap)
            restore_s = time.perf_counter() - t0
        out["per_type"][game] = {
            "games": len(ok_ids),
            "generation_failed": failed_gen,
            "candidates_drawn": attempts,
            "yield": round(len(ok_ids) / attempts, 3) if attempts else None,
            "distinct_problems": len(problems),
            "generation_s_mean": round(statistics.mean(gen_s), 2) if gen_s else None,
            "newly_generated": len(gen_s),
            "handcoded_success": f"{wins}/{len(ok_ids)}",
            "handcoded_success_rate": round(wins / len(ok_ids), 3) if ok_ids else None,
            "planner_success": f"{p_wins}/{len(p_ids)}",
            "mean_expert_steps": round(steps / len(ok_ids), 1) if ok_ids else None,
            "warm_reset_s": round(statistics.mean(resets), 3) if resets else None,
            "steps_per_s_step_only": round(steps / step_s, 1) if step_s else None,
            "steps_per_s_expert_episode": round(steps / ep_s, 1) if ep_s else None,
            "restore_by_replay_5_steps_s": round(restore_s, 3) if restore_s else None,
        }
    env.close()
    out["catalogue"] = {s: len(env.tasks(s)) for s in ("train", "dev", "test")}
    out["scenes"] = {
        g: {s: len(alfworld_gen.scenes_for(g, s)) for s in ("train", "test")} for g in TYPES
    }
    out["warm_reset_s_mean"] = round(statistics.mean(all_resets), 3) if all_resets else None
    return out


def bench_appworld() -> dict[str, Any]:
    from nightowl.envs.appworld import AppWorldEnv
    from nightowl.envs.appworld_tasks import pack

    env = AppWorldEnv(cache_dir=REPO / ".nightowl" / "cache" / "appworld")
    t0 = time.perf_counter()
    env.reset("appworld/note-create/train/0")
    first = time.perf_counter() - t0
    ids = [f"appworld/{t.name}/{t.split}/0" for t in pack.TASKS.values()]
    resets, wins, steps, step_s, ep_s = [], 0, 0, 0.0, 0.0
    for tid in ids:
        t0 = time.perf_counter()
        env.reset(tid)
        resets.append(time.perf_counter() - t0)
        won, n, s_step, s_ep = _expert_episode(env, tid, 20)
        wins += won
        steps += n
        step_s += s_step
        ep_s += s_ep
    env.reset("appworld/spotify-playlist/train/0")
    env.step(env.expert_action())
    env.step(env.expert_action())
    snap = env.snapshot()
    t0 = time.perf_counter()
    env.restore(snap)
    restore_s = time.perf_counter() - t0
    env.close()
    by_split = {s: sum(t.split == s for t in pack.TASKS.values()) for s in ("train", "dev", "test")}
    return {
        "tasks": len(ids),
        "tasks_per_split": by_split,
        "apps": list(pack.APPS),
        "worker_load_s": round(env.load_seconds, 2),
        "first_reset_s": round(first, 2),
        "warm_reset_s": round(statistics.mean(resets), 4),
        "expert_success": f"{wins}/{len(ids)}",
        "mean_expert_steps": round(steps / len(ids), 1),
        "steps_per_s_step_only": round(steps / step_s, 1),
        "steps_per_s_expert_episode": round(steps / ep_s, 1),
        "restore_by_replay_2_steps_s": round(restore_s, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-type", type=int, default=10)
    ap.add_argument("--planner-per-type", type=int, default=3)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "envs_extras.json"))
    args = ap.parse_args()
    results: dict[str, Any] = {
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
    }
    t0 = time.perf_counter()
    results["appworld"] = bench_appworld()
    results["alfworld"] = bench_alfworld(args.per_type, args.planner_per_type)
    results["wall_s"] = round(time.perf_counter() - t0, 1)

    table = Table(title="nightowl extras: ALFWorld / AppWorld")
    for col in (
        "env",
        "games",
        "expert win",
        "planner win",
        "yield",
        "distinct",
        "reset s",
        "steps/s (step)",
        "steps/s (expert ep.)",
        "restore s",
    ):
        table.add_column(col)
    for game, r in results["alfworld"]["per_type"].items():
        table.add_row(
            f"alfworld/{game}",
            str(r["games"]),
            r["handcoded_success"],
            r["planner_success"],
            str(r["yield"]),
            str(r["distinct_problems"]),
            str(r["warm_reset_s"]),
            str(r["steps_per_s_step_only"]),
            str(r["steps_per_s_expert_episode"]),
            str(r["restore_by_replay_5_steps_s"]),
        )
    a = results["appworld"]
    table.add_row(
        "appworld (pack)",
        str(a["tasks"]),
        a["expert_success"],
        "-",
        "-",
        str(a["tasks"]),
        str(a["warm_reset_s"]),
        str(a["steps_per_s_step_only"]),
        str(a["steps_per_s_expert_episode"]),
        str(a["restore_by_replay_2_steps_s"]),
    )
    Console(width=170).print(table)
    results["load_average_at_end"] = os.getloadavg()
    print(f"appworld worker load {a['worker_load_s']} s; wall {results['wall_s']} s")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
