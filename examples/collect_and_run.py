"""Collect oracle demos on TextWorld-Express, then run a ladder on held-out tasks.

    python examples/collect_and_run.py                      # cascade with the embedded student
    python examples/collect_and_run.py --ladder teacher     # teacher-only baseline (fast)

Everything lands in the database of the current settings (the data home: `nightowl info`);
the run's ledger report is printed at the end.
"""

from __future__ import annotations

import argparse

from nightowl import CollectRequest, EpisodeBudget, Nightowl, RunSpec, select_tasks


def main() -> None:
    """Collect, run, report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--game", default="coin")
    ap.add_argument("--demos", type=int, default=6, help="training tasks the oracle plays")
    ap.add_argument("--tasks", type=int, default=3, help="held-out test tasks")
    ap.add_argument("--ladder", default="cascade", help="teacher|student+demos|cascade|margin")
    args = ap.parse_args()

    with Nightowl.open() as no:
        got = no.collect(CollectRequest(env="twx", game=args.game, tasks=args.demos))
        print(f"collected {got.demos_added} demos for ${got.collection_cost:.5f}")
        ids = select_tasks("twx", "test", args.tasks, game=args.game)
        spec = RunSpec(name=args.ladder, env="twx", split="test", task_ids=ids,
                       ladder=args.ladder, budget=EpisodeBudget(max_steps=20), concurrency=2)
        summary = no.run(spec)
        print(f"{args.ladder}: {summary.successes}/{summary.episodes} won, "
              f"${summary.cost_per_episode:.5f} per episode, teacher share "
              f"{summary.teacher_share:.2f}")
        report = no.report(summary.run_id)
        print(f"ledger: {report.n_episodes} episodes, total ${report.total_cost:.5f}, "
              f"roles {sorted(report.roles)}")


if __name__ == "__main__":
    main()
