"""Demos retrieved every step vs once per episode, side by side with the real student.

    python bench/demo_retrieval.py [--env tw --game coin_collector --test 3 --max-steps 10]

Collects oracle demos once, then runs the same ladders on the same test tasks twice:
with demos retrieved at every step (the prompt's demo block changes, so the model's
prefix KV cache covers only the instructions) and once per episode (the demo block is
fixed, so later steps prefill only history + the current observation). Reports
success, wall time, prompt and cached prompt tokens per student call. Prints a table,
writes bench/results/demo_retrieval.json with the CPU model and load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nightowl.agent.budget import EpisodeBudget  # noqa: E402
from nightowl.app import CollectRequest, Nightowl, RunSpec, collect_demos, run_tasks  # noqa: E402
from nightowl.config import load_settings  # noqa: E402
from nightowl.envs.registry import select_tasks  # noqa: E402
from nightowl.ledger.tables import ModelCall  # noqa: E402
from nightowl.llm.dtype import cpu_model  # noqa: E402


async def main() -> None:
    """Collect once; run each ladder with both retrieval modes."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--env", default="tw")
    ap.add_argument("--game", default="coin_collector")
    ap.add_argument("--demos", type=int, default=12)
    ap.add_argument("--test", type=int, default=3)
    ap.add_argument("--max-steps", type=int, default=10)
    ap.add_argument("--ladders", default="student+demos,margin")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "demo_retrieval.json"))
    args = ap.parse_args()
    load0 = os.getloadavg()
    rows = []
    settings = load_settings(home=Path(tempfile.mkdtemp(prefix="demo-retrieval-")))
    with Nightowl.open(settings) as app:
        await collect_demos(app, CollectRequest(env=args.env, game=args.game, tasks=args.demos))
        ids = select_tasks(args.env, "test", args.test, game=args.game)
        for ladder in args.ladders.split(","):
            for mode in ("step", "episode"):
                app.cold_start()
                s = await run_tasks(app, RunSpec(
                    name=f"{ladder} demos per {mode}", env=args.env, split="test", task_ids=ids,
                    ladder=ladder, budget=EpisodeBudget(max_steps=args.max_steps),
                    concurrency=args.concurrency, demos_per=mode))
                with app.db.sessions() as ss:
                    n, p, c = ss.execute(
                        select(func.count(), func.avg(ModelCall.prompt_tokens),
                               func.avg(ModelCall.cached_prompt_tokens))
                        .where(ModelCall.run_id == s.run_id, ModelCall.role == "student")
                    ).one()
                rows.append({"ladder": ladder, "demos_per": mode, "successes": s.successes,
                             "episodes": s.episodes, "steps": s.steps_per_episode * s.episodes,
                             "wall_s": s.wall_s, "student_calls": n,
                             "prompt_tokens_per_call": float(p or 0),
                             "cached_tokens_per_call": float(c or 0),
                             "cost_per_episode": s.cost_per_episode,
                             "teacher_share": s.teacher_share})
                print(json.dumps(rows[-1]), flush=True)
    machine = {"cpu": cpu_model(), "cores": os.cpu_count(), "load_before": load0,
               "load_after": os.getloadavg()}
    t = Table(title=f"{args.env}/{args.game}: demos per step vs per episode ({machine['cpu']}, "
                    f"load {load0[0]:.1f} -> {machine['load_after'][0]:.1f})")
    for col in ("ladder", "demos per", "success", "steps", "wall s", "s/step",
                "prompt tok/call", "cached tok/call", "$/episode", "teacher share"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(r["ladder"], r["demos_per"], f"{r['successes']}/{r['episodes']}",
                  f"{r['steps']:.0f}", f"{r['wall_s']:.0f}",
                  f"{r['wall_s'] / max(r['steps'], 1):.2f}",
                  f"{r['prompt_tokens_per_call']:.0f}", f"{r['cached_tokens_per_call']:.0f}",
                  f"${r['cost_per_episode']:.5f}", f"{r['teacher_share']:.2f}")
    Console(width=160).print(t)
    Path(args.out).write_text(json.dumps({"machine": machine, "rows": rows, "args": vars(args)},
                                         indent=1))


if __name__ == "__main__":
    asyncio.run(main())
