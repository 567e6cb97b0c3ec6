"""Rich tables for run summaries and calibration reports (drawn through `fit`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rich.table import Table

from nightowl.app.calibrate import CalibrationReport
from nightowl.app.runs import RunSummary
from nightowl.app.showcase import CONFIG_LABELS
from nightowl.cli._fit import Fitted, fit


def fmt_cost(x: float | None) -> str:
    """Dollars with 5 decimals; ``inf`` for an infinite cost-of-pass."""
    return "inf" if x is None or math.isinf(x) else f"${x:.5f}"


def summary_table(rows: Sequence[RunSummary], title: str) -> Fitted:
    """The comparison table of run summaries."""
    t = Table(title=title)
    for col in (
        "configuration",
        "success",
        "cost/episode",
        "cost-of-pass",
        "teacher share",
        "student samples/step",
        "steps/ep",
        "wall s",
    ):
        t.add_column(col, justify="left" if col == "configuration" else "right")
    for r in rows:
        t.add_row(
            CONFIG_LABELS.get(r.name, r.name),
            f"{r.successes}/{r.episodes} ({r.success_rate:.0%})",
            fmt_cost(r.cost_per_episode),
            fmt_cost(r.cost_of_pass),
            f"{r.teacher_share:.2f}",
            f"{r.student_samples_per_step:.2f}",
            f"{r.steps_per_episode:.1f}",
            f"{r.wall_s:.1f}",
        )
    return fit(t)


def calibration_table(rep: CalibrationReport, *, all_rules: bool = False) -> Fitted:
    """Candidate rules cheapest first, the chosen one starred, dev results where played.

    By default only the rules worth reading are shown: the predicted cost/success
    frontier, every rule played on dev, the open-loop choice and teacher-only (the JSON
    written with ``--out`` holds every candidate); ``all_rules`` shows all of them.
    """
    from nightowl.distill.calibrate import dev_saving, frontier, required_saving

    o = rep.options
    t = Table(title=f"calibration on {o.env} {o.split} ({rep.states} states, "
                    f"student top-1 = expert {rep.student_top1_agreement:.0%})")
    for col in ("rule", "pred. success", "pred. cost/ep", "student accepts", "samples/step",
                "dev success", "dev cost/ep", "dev x cheaper (needs)", "dev teacher share",
                "repeats"):
        t.add_column(col, justify="right")
    played = {(r["spec"], r["temperature"]): r for r in rep.rollouts}  # the last play wins
    teacher = played.get(("teacher", 0.0))

    def saving(m: dict[str, Any]) -> str:
        """Dev saving against teacher-only, and what calibrate required of this rule."""
        if teacher is None or m is teacher or not m["dev_cost_per_episode"]:
            return ""
        need = required_saving(m, teacher, o.min_saving, o.confidence)
        return f"{dev_saving(m, teacher):.2f}x ({need:.2f}x)"
    replaced = [r for r in rep.rollouts if played[(r["spec"], r["temperature"])] is not r]
    chosen = (rep.chosen["spec"], rep.chosen["temperature"])
    shown = {(r["spec"], r["temperature"]) for r in frontier(rep.candidates, 1.0)}
    shown |= set(played) | {chosen, ("teacher", 0.0)}
    if rep.predicted_choice:
        shown.add((rep.predicted_choice["spec"], rep.predicted_choice["temperature"]))
    rows = sorted(rep.candidates, key=lambda r: r["predicted_cost_per_episode"])
    hidden = 0
    for r in rows:
        key = (r["spec"], r["temperature"])
        if not all_rules and key not in shown:
            hidden += 1
            continue
        m = played.get(key)
        mark = " *" if key == chosen else ""
        t.add_row(
            r["rule"] + mark, f"{r['predicted_success']:.2f}",
            f"${r['predicted_cost_per_episode']:.5f}", f"{r['student_acceptance']:.2f}",
            f"{r['samples_per_step']:.2f}",
            f"{m['dev_successes']}/{m['dev_episodes']}" if m else "",
            f"${m['dev_cost_per_episode']:.5f}" if m else "",
            saving(m) if m else "",
            f"{m['dev_teacher_share']:.2f}" if m else "",
            (m.get("repeats") or "") if m else "",
        )
    notes = [f"{r['rule']} with repeats {r.get('repeats')}: dev {r['dev_successes']}/"
             f"{r['dev_episodes']}, so repeats went to the teacher" for r in replaced]
    if hidden:
        notes.append(f"{hidden} more candidates off the predicted frontier "
                     "(--all-rules shows them; --out writes them all)")
    if notes:
        t.caption = "; ".join(notes)
    return fit(t)
