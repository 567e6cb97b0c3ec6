"""Several hosts on one machine: nothing but PostgreSQL and Redis is shared.

Runs ``scripts/multihost-run.sh`` (bench/multihost.py): two network namespaces (host-a,
host-b) with their own hostname, loopback, home, model cache and /tmp, each running a
``nightowl worker --queues episodes``; the coordinator (collect + ``run --via celery
--watch``) in a third home; PostgreSQL and Redis reachable only at 10.77.0.1. Then the
same run with both workers on one host, and the two are compared: same successes, every
episode finished exactly once, same tokens and costs (the billed cost exactly when each
worker ran the same episodes in the same order; see bench/multihost.py).

About 4 minutes on a 2-core VM (two cold model conversions per phase), hence ``slow``
(``make test-slow``). Needs root and ``ip netns``; skips otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.workers.conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def _why_not() -> str | None:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root (network namespaces, mounts)"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        return f"`ip netns` is unavailable here: {r.stderr.strip()[:200]}"
    for exe, why in (("unshare", "util-linux unshare"), ("java", "Java (make setup)"),
                     ("redis-server", "redis-server (scripts/with-services.sh installs it)")):
        if shutil.which(exe) is None:
            return f"{why} is not installed"
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")) and not shutil.which("initdb"):
        return "PostgreSQL is not installed (scripts/with-services.sh installs it)"
    return None


def test_two_namespaced_hosts_match_one_host(tmp_path: Path) -> None:
    why = _why_not()
    if why:
        pytest.skip(why)
    out = tmp_path / "multihost.json"
    r = subprocess.run(
        ["bash", str(REPO / "scripts" / "multihost-run.sh"), "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=1700, check=False,
    )
    assert out.exists(), f"exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    res = json.loads(out.read_text())
    multi, single = res["phases"]["multihost"], res["phases"]["single_host"]
    cmp = res["comparison"]
    assert cmp["differences"] == [], cmp["differences"]  # decisions, tokens, list-price cost
    assert res["match"] and r.returncode == 0, r.stdout[-3000:]
    assert cmp["same_successes"] and cmp["both_finished_exactly_once"]
    assert abs(cmp["total_list_cost_diff_usd"]) < 1e-12
    if cmp["same_schedule"]:  # same episodes in the same order per worker: same bill
        assert cmp["same_costs"] and cmp["billing_differences"] == [], cmp
    for phase in (multi, single):
        assert phase["episodes"] == res["args"]["tasks"] == phase["tasks_seen"]
        assert all(t["attempts"] == 1 and t["requeues"] == 0 for t in phase["tasks"].values())
    # both namespaced hosts ran episodes, and only they did
    assert set(multi["hosts"]) == {"host-a", "host-b"}, multi["hosts"]
    for name in ("host-a", "host-b", "coordinator"):
        probe = multi["isolation_probes"][name]
        assert probe["hostname"] == name
        assert probe["pg_on_10.77.0.1"] and probe["redis_on_10.77.0.1"]
        assert not probe["pg_on_127.0.0.1"] and not probe["redis_on_127.0.0.1"]
        assert probe["other_hosts_visible"] == [] and probe["real_cache_entries"] == []
        folder = multi["folders"][name]
        assert folder["sqlite_files_in_home"] == []  # ledger and checkpoints in PostgreSQL
        assert folder["index_files"], folder  # demo indexes built on this host from SQL
    for name in ("host-a", "host-b"):  # each host converted the model into its own cache
        assert any(m.startswith("SmolLM2") for m in multi["folders"][name]["model_cache"])
    # the script cleaned up after itself
    assert not {"host-a", "host-b"} & set(
        subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    )
    assert not Path("/sys/class/net/nomh-br0").exists()
