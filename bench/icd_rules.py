"""Named acceptance rules played side by side on one family's test tasks.

    python bench/icd_rules.py twx/mapreader --rules majority:3:0.6@0.5,margin:0/escalate \
        [--test 12]
    python bench/icd_rules.py tw/coin_collector \
        --rules unanimity:1@0.5/explore/allow,unanimity:1@0.5/explore/avoid --test 12

`bench/icd_e2e.py` lets `calibrate` choose one rule on dev; this plays the rules you
name (``rule@temperature/repeats/backtrack``; repeats ``explore`` and backtrack ``avoid``
by default, the student tier's defaults) next to teacher-only
on the same test tasks, with the same oracle demos (``--demos`` train tasks, collected
once into a throw-away home), so a change to the student tier can be measured before
and after on one sample (run it at both commits). Prints a table and writes ``--out``
(JSON, with the CPU and load).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nightowl.agent.budget import EpisodeBudget  # noqa: E402
from nightowl.agent.presets import preset_for_rule  # noqa: E402
from nightowl.app import CollectRequest, Nightowl, RunSpec, collect_demos, run_tasks  # noqa: E402
from nightowl.config import load_settings  # noqa: E402
from nightowl.envs.registry import select_tasks  # noqa: E402
from nightowl.llm.dtype import cpu_model  # noqa: E402


def git_rev() -> str:
    """The short commit of this checkout ("?" outside git)."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return out.stdout.strip()


async def play(fam: str, rules: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Collect demos once, then teacher-only and each rule on the same test tasks."""
    env, _, game = fam.partition("/")
    settings = load_settings(home=Path(tempfile.mkdtemp(prefix="icd-rules-")))
    rows: list[dict[str, Any]] = []
    with Nightowl.open(settings) as app:
        await collect_demos(app, CollectRequest(env=env, game=game, tasks=args.demos,
                                                max_steps=args.collect_steps))
        ids = select_tasks(env, "test", args.test, game=game)
        budget = EpisodeBudget(max_steps=args.max_steps)
        for item in ["teacher", *rules]:
            head, _, policies = item.partition("/")
            repeats, _, backtrack = policies.partition("/")
            spec, _, temp = head.partition("@")
            t0 = time.perf_counter()
            s = await run_tasks(app, RunSpec(
                name=item, env=env, split="test", task_ids=ids, ladder=preset_for_rule(spec),
                rule=None if spec == "teacher" else spec, temperature=float(temp or 0.0),
                repeats=repeats or "explore",  # type: ignore[arg-type]  # checked by the run
                backtrack=backtrack or "avoid",  # type: ignore[arg-type]
                budget=budget, concurrency=args.concurrency))
            rows.append({"rule": item, "episodes": s.episodes, "successes": s.successes,
                         "cost_per_episode": s.cost_per_episode,
                         "steps_per_episode": s.steps_per_episode,
                         "teacher_share": s.teacher_share, "wall_s": time.perf_counter() - t0})
            print(json.dumps(rows[-1]), flush=True)
    base = rows[0]["cost_per_episode"]
    for r in rows:
        r["x_cheaper"] = base / r["cost_per_episode"] if r["cost_per_episode"] else None
    return rows


def student_dtype() -> str:
    """The student's dtype as configured (``NIGHTOWL_MODELS__SMOLLM2__PARAMS__DTYPE=...``)."""
    settings = load_settings()
    return str(settings.model(settings.student_model).params.get("dtype", "auto"))


def main() -> None:
    """Parse arguments, play, print the table, write the JSON."""
    ap = argparse.ArgumentParser()
    ap.add_argument("family", help="env/game, e.g. twx/coin")
    ap.add_argument("--rules", required=True,
                    help="comma-separated rule@temperature[/explore|/escalate[/avoid|/allow]]")
    ap.add_argument("--demos", type=int, default=8)
    ap.add_argument("--test", type=int, default=8)
    ap.add_argument("--max-steps", type=int, default=30)
    ap.add_argument("--collect-steps", type=int, default=40)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "icd_rules.json"))
    args = ap.parse_args()
    load_before = os.getloadavg()
    commit = git_rev()  # the code this process runs (later commits do not count)
    rows = asyncio.run(play(args.family, [r for r in args.rules.split(",") if r], args))
    load_after = os.getloadavg()
    machine: dict[str, Any] = {"cpu": cpu_model(), "cores": os.cpu_count(),
                               "load_before": load_before, "load_after": load_after,
                               "commit": commit, "student_dtype": student_dtype()}
    t = Table(title=f"{args.family}: rules on {args.test} test tasks ({machine['cpu']}, load "
                    f"{load_before[0]:.1f} -> {load_after[0]:.1f}, {machine['commit']})")
    for col in ("rule", "success", "$/episode", "x cheaper", "steps", "teacher share"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(r["rule"], f"{r['successes']}/{r['episodes']}", f"${r['cost_per_episode']:.5f}",
                  f"{r['x_cheaper']:.2f}" if r["x_cheaper"] else "-",
                  f"{r['steps_per_episode']:.1f}", f"{r['teacher_share']:.2f}")
    Console(width=160).print(t)
    Path(args.out).write_text(json.dumps({"machine": machine, "args": vars(args), "rows": rows},
                                         indent=1))


if __name__ == "__main__":
    main()
