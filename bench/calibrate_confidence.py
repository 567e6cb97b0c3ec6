"""Replay calibrate's choice on recorded dev rollouts with and without the confidence bound.

`bench/icd_e2e.py` records, per family, every rule calibrate played on dev (successes,
episodes, cost per episode) next to teacher-only, and what the chosen setting then did
on the test split. This script re-decides each family with `recommend_measured` at
``--confidence`` 0 (observed dev success and ``--min-saving`` only: the rule before)
and at the given confidence, and prints which choices change and what the choice did
on test. No model calls: it reads the JSON.

A replay is exact only where no played rule's pass/fail changed; where one did, the
live calibrate may probe other rules (`next_probe`), so the family is marked and must
be rerun (`bench/icd_e2e.py --families F`).

Usage:
    python bench/calibrate_confidence.py [--e2e bench/results/icd_e2e.json] [--confidence 0.8]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nightowl.distill.calibrate import (  # noqa: E402
    dev_saving,
    keeps_success_and_saves,
    recommend_measured,
    required_saving,
)


def _dev_rows(rollouts: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(teacher-only's dev row, the student rules' rows) with the fields the rules read."""
    rows = [{**r, "rule": r["spec"], "dev_success": r["dev_successes"] / r["dev_episodes"]}
            for r in rollouts]
    return rows[0], rows[1:]


def replay(row: dict[str, Any], target: float, min_saving: float,
           confidence: float) -> dict[str, Any]:
    """One family: the choice before and with the bound, and whether the replay is exact."""
    teacher, played = _dev_rows(row["calibrate_dev_rollouts"])
    before = recommend_measured(played, teacher, target, min_saving, 0.0)
    after = recommend_measured(played, teacher, target, min_saving, confidence)
    flips = [f"{p['spec']}@{p['temperature']:g}" for p in played
             if keeps_success_and_saves(p, teacher, target, min_saving, 0.0)
             != keeps_success_and_saves(p, teacher, target, min_saving, confidence)]
    rec = row["recommended"]

    def name(out: dict[str, Any]) -> str:
        c = out["chosen"]
        return "teacher only" if not out["student_pays"] else (
            f"{c['spec']} @T={c['temperature']:g} ({c.get('repeats')})")

    return {
        "family": row["family"],
        "rules": [{"spec": p["spec"], "temperature": p["temperature"], "repeats": p["repeats"],
                   "dev": f"{p['dev_successes']}/{p['dev_episodes']}",
                   "saving": dev_saving(p, teacher),
                   "needs": required_saving(p, teacher, min_saving, confidence)}
                  for p in played],
        "choice_before": name(before), "choice_with_bound": name(after),
        "changed": name(before) != name(after), "exact": not flips, "flipped_rules": flips,
        "test_recorded": (f"{rec['successes']}/{rec['episodes']} vs teacher "
                          f"{row['teacher']['successes']}/{row['teacher']['episodes']} at "
                          f"{row['cost_ratio_teacher_over_recommended']:.2f}x"),
        "recorded_confidence": row.get("confidence", 0.0),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--e2e", type=Path, default=ROOT / "bench" / "results" / "icd_e2e.json")
    ap.add_argument("--target", type=float, default=0.9)
    ap.add_argument("--min-saving", type=float, default=1.2)
    ap.add_argument("--confidence", type=float, default=0.8)
    ap.add_argument("--out", type=Path,
                    default=ROOT / "bench" / "results" / "calibrate_confidence.json")
    args = ap.parse_args()
    rows = json.loads(args.e2e.read_text())["rows"]
    out = [replay(r, args.target, args.min_saving, args.confidence) for r in rows]
    t = Table(title=f"calibrate's choice on recorded dev rollouts ({args.e2e.name}), "
                    f"before vs with a {args.confidence:.0%} lower confidence bound")
    for col in ("family", "played on dev: rule dev-won saving (needs)", "before",
                "with bound", "replay", "recorded test (its choice)"):
        t.add_column(col)
    for o in out:
        rules = "\n".join(f"{r['spec']}@{r['temperature']:g} {r['dev']} {r['saving']:.2f}x "
                          f"({r['needs']:.2f}x)" for r in o["rules"])
        t.add_row(o["family"], rules, o["choice_before"],
                  ("[bold]" if o["changed"] else "") + o["choice_with_bound"],
                  "exact" if o["exact"] else "rerun: " + ", ".join(o["flipped_rules"]),
                  f"{o['test_recorded']} (confidence {o['recorded_confidence']:g})")
    Console(width=200).print(t)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                    "families": out}, indent=1))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
