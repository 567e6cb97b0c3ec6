"""ICD + cascade benchmark: sampling rules, loop overhead, cost vs teacher-only.

Three parts (all printed as rich tables and written to bench/results/icd.json):

1. overhead  -- per-step runtime of the agent loop excluding model and environment time
   (LangGraph nodes + SQLite checkpoints + ledger/step recording, and retrieval
   separately), measured with a zero-latency scripted student on TWX coin (means only;
   `bench/overhead.py` measures p50/p99 per step, the issue #12 numbers).
2. sampling  -- sequential vs fixed-N sampling for the *real* embedded student: the dev
   states' choice distributions are scored once with SmolLM2 (as `nightowl calibrate`
   does), then every rule's acceptance, wrong-acceptance, samples/step and predicted
   success are computed from them (exact for unanimity, Monte Carlo otherwise).
   With ``--real-runs`` the cascade is also run end to end with unanimity:3 vs
   sequential:3:1 on test tasks (slow on a busy CPU).
3. cost      -- ICD + cascade vs teacher-only cost per episode and success, read from a
   `nightowl demo` JSON report (``--demo-report``; the newest one by default).

Usage: python bench/icd.py [--part overhead,sampling,cost] [--tasks N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

console = Console()


async def bench_overhead(tasks: int) -> dict[str, Any]:
    from nightowl.agent.acceptance import Unanimity
    from nightowl.agent.budget import EpisodeBudget
    from nightowl.agent.graph import AgentGraph, LoopConfig
    from nightowl.agent.ladder import Ladder
    from nightowl.agent.tiers import OracleTier, StudentTier
    from nightowl.checkpoints_sqlite import open_sqlite_checkpointer as open_checkpointer
    from nightowl.config import FRONTIER_PRICES, SMALL_HOSTED_PRICES
    from nightowl.envs.registry import make_env, select_tasks
    from nightowl.ledger import Ledger, MeteredModel
    from nightowl.llm.scripted import FunctionModel
    from nightowl.memory.embedder import HashingEmbedder, build_embedder
    from nightowl.memory.store import DemoMemory
    from nightowl.storage import open_db

    class Tok:
        def count_tokens(self, text: str) -> int:
            return len(text.split())

    out: dict[str, Any] = {}
    train = select_tasks("twx", "train", 12, game="coin")
    test = select_tasks("twx", "test", tasks, game="coin")
    for label, use_ck, embed in (
        ("graph only (no checkpointer, no retrieval)", False, None),
        ("graph + SQLite checkpoints (durability=sync)", True, None),
        ("graph + checkpoints + retrieval (hashing embedder)", True, "hash"),
        ("graph + checkpoints + retrieval (MiniLM embedder)", True, "minilm"),
    ):
        d = Path(tempfile.mkdtemp())
        ledger = Ledger(open_db(url=f"sqlite:///{d}/b.db"))
        memory = None
        if embed:
            emb = HashingEmbedder() if embed == "hash" else build_embedder(None)
            memory = DemoMemory(ledger.db, emb, d / "idx")
            crun = ledger.start_run("collect", "collect", {})
            oracle = OracleTier(ledger=ledger, prices=FRONTIER_PRICES, tokenizer=Tok())
            g0 = AgentGraph(
                ladder=Ladder([oracle]), env_factory=lambda: make_env("twx"), ledger=ledger,
                memory=memory, config=LoopConfig(retrieve=False), env_name="twx",
            )
            res0 = await g0.run_many(run_id=crun, task_ids=train, split="train", concurrency=1)
            for r in res0:
                if r.success:
                    memory.add_episode(r.episode_id, "find the coin",
                                       memory.episode_steps(r.episode_id))
        run = ledger.start_run("bench", "bench", {})
        student = MeteredModel(
            FunctionModel(lambda req: sorted(req.choices)[0] if req.choices else "look around"),
            ledger, SMALL_HOSTED_PRICES, run_id=run, role="student",
        )
        ladder = Ladder([StudentTier(student, prices=SMALL_HOSTED_PRICES, rule=Unanimity(3))])
        cfg = LoopConfig(budget=EpisodeBudget(max_steps=20), retrieve=memory is not None)

        async def go(saver: Any, ladder: Any, ledger: Any, memory: Any, cfg: Any,
                     run: str) -> tuple[list[Any], float]:
            g = AgentGraph(ladder=ladder, env_factory=lambda: make_env("twx"), ledger=ledger,
                           memory=memory, config=cfg, checkpointer=saver, env_name="twx")
            t0 = time.perf_counter()
            res = await g.run_many(run_id=run, task_ids=test, split="test", concurrency=1)
            return res, time.perf_counter() - t0

        if use_ck:
            with open_checkpointer(d / "ck.sqlite") as saver:
                res, wall = await go(saver, ladder, ledger, memory, cfg, run)
        else:
            res, wall = await go(None, ladder, ledger, memory, cfg, run)
        steps = sum(r.steps for r in res)
        node = sum(r.stats["node_s"] for r in res)
        retr = sum(r.stats["retrieve_s"] for r in res)
        model = sum(r.stats["model_s"] for r in res)
        env = sum(r.stats["env_s"] for r in res)
        out[label] = {
            "steps": steps,
            "ms_per_step_total_wall": 1000 * wall / steps,
            "ms_per_step_model": 1000 * model / steps,
            "ms_per_step_env": 1000 * env / steps,
            "ms_per_step_retrieval": 1000 * retr / steps,
            "ms_per_step_loop_excl_model_env": 1000 * (wall - model - env) / steps,
            "ms_per_step_nodes_recorded": 1000 * node / steps,
        }
    t = Table(title="agent loop overhead per step (scripted zero-latency student, twx coin)")
    for col in ("configuration", "steps", "wall", "loop excl. model+env", "retrieval", "env"):
        t.add_column(col, justify="right")
    for k, v in out.items():
        t.add_row(k, str(v["steps"]), f"{v['ms_per_step_total_wall']:.1f} ms",
                  f"{v['ms_per_step_loop_excl_model_env']:.1f} ms",
                  f"{v['ms_per_step_retrieval']:.1f} ms", f"{v['ms_per_step_env']:.1f} ms")
    console.print(t)
    return out


async def bench_sampling(
    tasks: int, real_runs: bool, test_tasks: int, env: str, game: str
) -> dict[str, Any]:
    from nightowl.app import Nightowl, RunSpec, add_demos, collect_states, run_tasks
    from nightowl.config import load_settings
    from nightowl.distill.calibrate import CalibrateOptions, evaluate_rules
    from nightowl.envs.registry import select_tasks

    home = Path(tempfile.mkdtemp())
    settings = load_settings(home=home)
    wb = Nightowl.open(settings)
    from nightowl.agent.budget import EpisodeBudget

    t0 = time.perf_counter()
    train = select_tasks(env, "train", 12, game=game)
    coll = await run_tasks(wb, RunSpec(name="collect", env=env, split="train", task_ids=train,
                                       ladder="teacher", retrieve=False, kind="collect",
                                       budget=EpisodeBudget(max_steps=40)))
    n_demos = add_demos(wb, coll)
    opts = CalibrateOptions(env=env, game=game, tasks=tasks, ns=[1, 3, 5],
                            taus=[0.6, 1.0], temperatures=[0.3, 0.7], min_states=0)
    states, _ = await collect_states(wb, opts)
    t_states = time.perf_counter() - t0
    rows = evaluate_rules(states, opts, settings.model(settings.student_model).prices)
    pairs = []
    for t in opts.temperatures:
        for n in (3, 5):
            for fixed, seq in ((f"unanimity:{n} @T={t:g}", f"sequential:{n}:1 @T={t:g}"),
                               (f"majority:{n}:0.6 @T={t:g}", f"sequential:{n}:0.6 @T={t:g}")):
                a = next((r for r in rows if r["rule"] == fixed), None)
                b = next((r for r in rows if r["rule"] == seq), None)
                if a and b:
                    pairs.append((a, b))
    t = Table(title=f"fixed-N vs sequential sampling, SmolLM2 student + {n_demos} demos, "
                    f"{len(states)} dev states ({env} {game})")
    for col in ("fixed-N rule", "samples/step", "accepts", "pred. success",
                "sequential rule", "samples/step", "accepts", "pred. success"):
        t.add_column(col, justify="right")
    for a, b in pairs:
        t.add_row(a["rule"], f"{a['samples_per_step']:.2f}", f"{a['student_acceptance']:.2f}",
                  f"{a['predicted_success']:.2f}", b["rule"], f"{b['samples_per_step']:.2f}",
                  f"{b['student_acceptance']:.2f}", f"{b['predicted_success']:.2f}")
    console.print(t)
    result: dict[str, Any] = {
        "states": len(states),
        "demos": n_demos,
        "scoring_wall_s": t_states,
        "pairs": [{"fixed": a, "sequential": b} for a, b in pairs],
        "all_rules": rows,
    }
    if real_runs:
        test = select_tasks(env, "test", test_tasks, game=game)
        real = {}
        for rule in ("unanimity:3", "sequential:3:1"):
            s = await run_tasks(wb, RunSpec(name=rule, env=env, split="test", task_ids=test,
                                            ladder="cascade", rule=rule, temperature=0.5,
                                            budget=EpisodeBudget(max_steps=12), kind="bench"))
            real[rule] = json.loads(s.model_dump_json(exclude={"episodes_detail"}))
            console.print(f"real cascade {rule}: success {s.success_rate:.2f}, "
                          f"samples/step {s.student_samples_per_step:.2f}, "
                          f"cost/episode ${s.cost_per_episode:.5f}, wall {s.wall_s:.0f} s")
        result["real_runs"] = real
    wb.close()
    return result


def bench_cost(report_path: Path | None) -> dict[str, Any]:
    if report_path is None:
        reports = sorted((ROOT / ".nightowl" / "reports").glob("demo-*.json"))
        if not reports:
            console.print("[yellow]no demo report found: run `nightowl demo` first[/]")
            return {}
        report_path = reports[-1]
    data = json.loads(report_path.read_text())
    by = {c["name"]: c for c in data["configs"]}
    t = Table(title=f"ICD + cascade vs teacher-only ({report_path.name})")
    for col in ("configuration", "success", "cost/episode", "vs teacher-only", "cost-of-pass"):
        t.add_column(col, justify="right")
    teacher = by.get("teacher")
    out = {"report": str(report_path), "rows": {}}
    for name, c in by.items():
        ratio = (teacher["cost_per_episode"] / c["cost_per_episode"]
                 if teacher and c["cost_per_episode"] else None)
        cop = c["cost_of_pass"]
        t.add_row(name, f"{c['success_rate']:.2f}", f"${c['cost_per_episode']:.5f}",
                  f"{ratio:.2f}x cheaper" if ratio else "-",
                  "inf" if cop is None else f"${cop:.5f}")
        out["rows"][name] = {"success_rate": c["success_rate"],
                             "cost_per_episode": c["cost_per_episode"],
                             "teacher_only_over_this": ratio, "cost_of_pass": cop}
    console.print(t)
    out["break_even_episodes"] = data.get("break_even_episodes")
    out["prices"] = data.get("prices")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", default="overhead,sampling,cost")
    ap.add_argument("--tasks", type=int, default=4, help="dev tasks (sampling) / test (overhead)")
    ap.add_argument("--test-tasks", type=int, default=4)
    ap.add_argument("--real-runs", action="store_true")
    ap.add_argument("--env", default="tw")
    ap.add_argument("--game", default="coin_collector")
    ap.add_argument("--demo-report", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "icd.json")
    args = ap.parse_args()
    parts = set(args.part.split(","))
    result: dict[str, Any] = {"machine": {"threads": __import__("os").environ.get(
        "NIGHTOWL_THREADS", "1"), "loadavg": list(__import__("os").getloadavg())}}
    if "overhead" in parts:
        result["overhead"] = asyncio.run(bench_overhead(args.tasks))
    if "sampling" in parts:
        result["sampling"] = asyncio.run(
            bench_sampling(args.tasks, args.real_runs, args.test_tasks, args.env, args.game))
    if "cost" in parts:
        result["cost"] = bench_cost(args.demo_report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(args.out.read_text()) if args.out.exists() else {}
    old.update(result)
    args.out.write_text(json.dumps(old, indent=1, default=str))
    console.print(f"written: {args.out}")



if __name__ == "__main__":
    main()
