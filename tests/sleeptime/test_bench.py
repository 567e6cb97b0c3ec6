"""bench/sleeptime.py end to end on a scripted note-writer (fast; checks the tables and JSON)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_runs_and_writes_json(tmp_path: Path) -> None:
    models = {
        "fake": {"backend": "scripted", "params": {"function": "tests.workers.fake_model:notes"}}
    }
    env = {**os.environ, "PYTHONPATH": str(REPO), "NIGHTOWL_MODELS": json.dumps(models)}
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [
            sys.executable,
            "bench/sleeptime.py",
            "--model",
            "fake",
            "--contexts",
            "2",
            "--budgets",
            "low,high",
            "--conditions",
            "none,with,instead",
            "--qpc",
            "1,10",
            "--price-in",
            "1",
            "--price-out",
            "1",
            "--out",
            str(out),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "accuracy vs test-time tokens" in proc.stdout and "Q=10" in proc.stdout
    data = json.loads(out.read_text())
    assert len(data["answers"]) == 2 * 3 * 2 * 3
    assert {r["condition"] for r in data["accuracy"]} == {"none", "with", "instead"}
    cost = {(r["condition"], r["budget"]): r["cost_per_query"] for r in data["cost_per_query"]}
    # sleep cost is amortised: more queries per context, cheaper per query; none has none
    assert cost[("with", "low")]["10"] < cost[("with", "low")]["1"]
    assert cost[("none", "low")]["10"] == cost[("none", "low")]["1"]
    with_c = [r for r in data["answers"] if r["condition"] == "with"]
    assert all(r["used_learned"] for r in with_c)
    assert all(s["learned_text"].startswith("Notes round") for s in data["sleep"])
