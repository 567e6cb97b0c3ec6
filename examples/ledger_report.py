"""Read the cost ledger from Python: every run, its cost per episode and cost-of-pass.

    python examples/ledger_report.py
"""

from __future__ import annotations

import math

from nightowl import Nightowl


def main() -> None:
    """Print one line per recorded run, newest first."""
    with Nightowl.open() as no:
        runs = no.ledger.list_runs()
        if not runs:
            print("no runs yet: try examples/collect_and_run.py")
        for run in runs:
            rep = no.report(run.run_id)
            cop = rep.cost_of_pass
            shown = "inf" if cop is None or math.isinf(cop) else f"${cop:.5f}"
            print(f"{run.run_id[:12]} {rep.name:<24} {rep.n_episodes:>3} episodes "
                  f"success {rep.success_rate:.0%} total ${rep.total_cost:.5f} "
                  f"cost-of-pass {shown}")


if __name__ == "__main__":
    main()
