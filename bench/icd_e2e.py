"""End-to-end ICD table per environment family: teacher-only vs the calibrated cascade.

    python bench/icd_e2e.py [--families twx/coin,twx/simonsays,tw/coin_collector]
                            (a family may be a scenario group: appworld/v-* or appworld/v-venmo*)
                            [--demos 10] [--dev 3] [--test 5] [--target 0.9]

Per family (an environment and one game): the oracle teacher plays ``--demos`` train
tasks (collection, billed), `calibrate` scores the student on ``--dev`` dev tasks and
chooses the cheapest acceptance rule whose predicted success reaches ``--target`` -- or
says the student cannot pay, and then the recommended setting is teacher-only. Both the
teacher-only baseline and the recommended setting then run on the same ``--test`` test
tasks, and so does the recommended rule *without demos* (``RunSpec(retrieve=False)``), so
each paying row shows how much of its saving the demos make. The choice is made on dev,
never by looking at test. Reports success, cost per
episode, cost-of-pass, teacher share, the ratio of costs and the break-even episode
count of the collection. Prints a table and writes bench/results/icd_e2e.json with the
CPU model and load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.icd_rules import git_rev  # noqa: E402
from nightowl.agent.budget import EpisodeBudget  # noqa: E402
from nightowl.agent.presets import preset_for_rule  # noqa: E402
from nightowl.app import (  # noqa: E402
    CalibrateOptions,
    CollectRequest,
    Nightowl,
    RunSpec,
    calibrate_rules,
    collect_demos,
    run_tasks,
)
from nightowl.config import load_settings  # noqa: E402
from nightowl.envs.registry import make_env, select_tasks  # noqa: E402
from nightowl.ledger import break_even_episodes  # noqa: E402
from nightowl.llm.dtype import cpu_model  # noqa: E402

DEFAULT_FAMILIES = ("twx/coin,twx/simonsays,twx/peckingorder,twx/mapreader,twx/sorting,"
                    "twx/arithmetic,twx/cookingworld,twx/twc,tw/coin_collector,tw/cooking")


def group_ids(env: str, prefix: str, split: str) -> list[str]:
    """Task ids of every game starting with ``prefix`` in ``split``, variant-major.

    Interleaved by seed (every scenario's first variant, then every second, ...) so that
    the first N cover as many scenarios as they can.
    """
    e = make_env(env)
    try:
        specs = [t for t in e.tasks(split) if t.game.startswith(prefix)]  # type: ignore[arg-type]
    finally:
        e.close()
    return [t.task_id for t in sorted(specs, key=lambda t: (t.seed, t.game))]


def split_families(text: str) -> list[str]:
    """``env/game`` names split at commas; a comma in an environment's options stays
    (``alfworld:expert=imitable,notes=search/heat,twx/coin`` is two families)."""
    out: list[str] = []
    for piece in text.split(","):
        if out and "/" not in out[-1]:
            out[-1] += "," + piece.strip()
        else:
            out.append(piece.strip())
    return out


async def family(fam: str, args: argparse.Namespace) -> dict[str, Any]:
    """Collect, calibrate on dev, run teacher-only and the recommendation on test."""
    env, _, game = fam.partition("/")
    settings = load_settings(home=Path(tempfile.mkdtemp(prefix="icd-e2e-")))
    t0 = time.perf_counter()
    group = game.endswith("*")  # a scenario group: every game starting with the prefix
    ids = {sp: group_ids(env, game[:-1], sp) for sp in ("train", "dev", "test")} if group \
        else {}
    with Nightowl.open(settings) as app:
        coll = await collect_demos(
            app, CollectRequest(env=env, game=None if group else game, tasks=args.demos,
                                max_steps=args.collect_steps),
            task_ids=ids["train"][: args.demos] if group else None)
        cal = await calibrate_rules(app, CalibrateOptions(
            env=env, game=None if group else game, tasks=args.dev, target=args.target,
            max_steps=args.collect_steps,
            verify=args.verify, min_saving=args.min_saving, confidence=args.confidence,
            rollout_max_steps=args.max_steps,
            min_states=args.min_states,
            concurrency=args.concurrency,
            task_ids=ids["dev"][: args.dev] if group else None))
        chosen = cal.chosen if cal.student_pays else None
        test_ids = (ids["test"][args.test_offset: args.test_offset + args.test] if group
                    else select_tasks(env, "test", args.test, game=game, offset=args.test_offset))
        budget = EpisodeBudget(max_steps=args.max_steps)
        teacher = await run_tasks(app, RunSpec(name="teacher", env=env, split="test",
                                               task_ids=test_ids, ladder="teacher",
                                               budget=budget, concurrency=args.concurrency))
        nodemo = None
        if chosen is not None:
            ladder = preset_for_rule(chosen["spec"])

            def rec_spec(name: str, retrieve: bool) -> RunSpec:
                return RunSpec(
                    name=name, env=env, split="test", task_ids=test_ids, ladder=ladder,
                    rule=chosen["spec"], temperature=chosen["temperature"],
                    repeats=chosen.get("repeats") or "explore", budget=budget,
                    concurrency=args.concurrency, retrieve=retrieve,
                    # the no-demo run must not turn its escalations into demos that a later
                    # family or rerun would retrieve
                    store_escalations=retrieve)

            rec = await run_tasks(app, rec_spec(f"{ladder} {chosen['spec']}", True))
            if not args.no_without_demos:
                # the same rule without retrieval: how much of the saving the demos make
                nodemo = await run_tasks(app, rec_spec(f"{ladder} {chosen['spec']} no demos",
                                                       False))
        else:
            rec = teacher
    ratio = teacher.cost_per_episode / rec.cost_per_episode if rec.cost_per_episode else math.inf
    n_star = break_even_episodes(coll.collection_cost, teacher.cost_per_episode,
                                 rec.cost_per_episode)
    return {
        "family": fam,
        "demos": coll.demos_added,
        "collection_cost": coll.collection_cost,
        "dev_states": cal.states,
        "dev_tasks": len(cal.dev_task_ids),
        "student_top1_dev": cal.student_top1_agreement,
        "calibrate_choice": chosen["spec"] if chosen else "teacher (student cannot pay)",
        "calibrate_repeats": chosen.get("repeats") if chosen else None,
        "calibrate_predicted_success": cal.chosen.get("predicted_success"),
        "calibrate_open_loop_choice": (cal.predicted_choice or {}).get("spec"),
        "calibrate_verdict": cal.verdict,
        "calibrate_dev_rollouts": [
            {k: r.get(k) for k in ("spec", "temperature", "repeats", "dev_successes",
                                   "dev_episodes",
                                   "dev_cost_per_episode", "dev_teacher_share",
                                   "predicted_success", "predicted_cost_per_episode")}
            for r in cal.rollouts],
        "calibrate_wall_s": cal.wall_s,
        "teacher": teacher.model_dump(exclude={"episodes_detail", "config"}),
        "recommended": rec.model_dump(exclude={"episodes_detail", "config"}),
        "cost_ratio_teacher_over_recommended": ratio,
        "without_demos": None if nodemo is None else nodemo.model_dump(
            exclude={"episodes_detail", "config"}),
        "cost_ratio_teacher_over_without_demos": (
            None if nodemo is None or not nodemo.cost_per_episode
            else teacher.cost_per_episode / nodemo.cost_per_episode),
        "equal_success": rec.successes >= teacher.successes - 1,
        "break_even_episodes": None if math.isinf(n_star) else n_star,
        "wall_s": time.perf_counter() - t0,
        "confidence": args.confidence,
    }


def _c(x: float) -> str:
    return "inf" if math.isinf(x) else f"${x:.5f}"


def _without_demos(row: dict[str, Any]) -> tuple[str, str]:
    nd = row.get("without_demos")
    if not nd:
        return "-", "-"
    ratio = row.get("cost_ratio_teacher_over_without_demos")
    return f"{nd['successes']}/{nd['episodes']}", "-" if ratio is None else f"{ratio:.2f}"


async def main() -> None:
    """Run every family, print the table, write the JSON."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--families", default=DEFAULT_FAMILIES)
    ap.add_argument("--demos", type=int, default=10)
    ap.add_argument("--dev", type=int, default=3)
    ap.add_argument("--test", type=int, default=5)
    ap.add_argument("--target", type=float, default=0.9)
    ap.add_argument("--max-steps", type=int, default=30)
    ap.add_argument("--collect-steps", type=int, default=40)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--verify", type=int, default=4,
                    help="calibration: candidate rules played end to end on dev")
    ap.add_argument("--min-states", type=int, default=20,
                    help="calibration: walk more dev tasks until this many states")
    ap.add_argument("--min-saving", type=float, default=1.2,
                    help="calibration: a student rule must be this many times cheaper on dev")
    ap.add_argument("--confidence", type=float, default=0.8,
                    help="calibration: ...and beat teacher-only's cost of pass at this lower "
                    "confidence bound of its dev success (0: observed success)")
    ap.add_argument("--no-without-demos", action="store_true",
                    help="skip the recommended rule's run without demos (RunSpec(retrieve="
                    "False)); by default every paying row also runs it")
    ap.add_argument("--test-offset", type=int, default=0,
                    help="test tasks start after this many of the split")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "icd_e2e.json"))
    args = ap.parse_args()
    load_before = os.getloadavg()
    commit = git_rev()  # the code this process runs (later commits do not count)
    rows = []
    for fam in split_families(args.families):
        row = {**await family(fam, args), "commit": commit}
        rows.append(row)
        print(json.dumps({k: row[k] for k in ("family", "calibrate_choice",
                                              "cost_ratio_teacher_over_recommended")}),
              flush=True)
        Path(args.out).write_text(json.dumps({"rows": rows, "args": vars(args)}, indent=1))
    machine = {"cpu": cpu_model(), "cores": os.cpu_count(), "load_before": load_before,
               "load_after": os.getloadavg()}
    t = Table(title=f"ICD end to end, test split ({machine['cpu']}, load "
                    f"{load_before[0]:.1f} -> {machine['load_after'][0]:.1f})")
    for col in ("family", "dev top-1", "calibrate chose", "teacher success", "teacher $/ep",
                "rec. success", "rec. $/ep", "rec. cost-of-pass", "teacher share", "x cheaper",
                "break-even", "no demos: success", "no demos: x cheaper"):
        t.add_column(col, justify="right", overflow="fold")  # long names wrap, never cut
    for r in rows:
        te, re_ = r["teacher"], r["recommended"]
        t.add_row(r["family"], f"{r['student_top1_dev']:.0%}", r["calibrate_choice"],
                  f"{te['successes']}/{te['episodes']}", _c(te["cost_per_episode"]),
                  f"{re_['successes']}/{re_['episodes']}", _c(re_["cost_per_episode"]),
                  _c(re_["cost_of_pass"]), f"{re_['teacher_share']:.2f}",
                  f"{r['cost_ratio_teacher_over_recommended']:.2f}",
                  "-" if r["break_even_episodes"] is None else f"{r['break_even_episodes']:.0f}",
                  *_without_demos(r))
    Console(width=200).print(t)
    Path(args.out).write_text(json.dumps({"machine": machine, "rows": rows, "args": vars(args)},
                                         indent=1, default=str))


if __name__ == "__main__":
    asyncio.run(main())
