"""Schemathesis fuzzing of both servers (real processes, scripted student), a small run.

The large run (>= 2,000 requests per server) is ``python bench/fuzz_servers.py``.
"""

from __future__ import annotations

from pathlib import Path

from bench.fuzz_servers import run_both


def test_fuzzed_requests_get_no_5xx_and_servers_stay_healthy(tmp_path: Path) -> None:
    reports = run_both(12, tmp_path)
    for report in reports:
        row = report.row()
        assert row["5xx"] == 0, row["first_5xx"]
        assert report.healthy_after, row
        # schema-valid requests are served, broken ones refused with 4xx, no key -> 401
        assert {200, 400, 401} <= set(report.statuses), row
        assert report.requests >= 30, row
