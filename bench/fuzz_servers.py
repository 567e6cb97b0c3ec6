"""API fuzzing of both servers with schemathesis, against the OpenAPI schema each publishes.

Starts `nightowl serve` and `nightowl models serve` as real processes on 127.0.0.1,
each over a scripted student (the registry's ``scripted`` backend: fixed text, no
weights) with bearer keys from a fresh key store, and fuzzes every operation of each
server's ``/openapi.json`` in schemathesis's positive mode (schema-valid requests) and
negative mode (requests that break the schema), plus each operation without a key.
Passes when no request got a 5xx and ``/health`` still answers afterwards.

    python bench/fuzz_servers.py                  # >= 2,000 requests per server
    python bench/fuzz_servers.py --examples 50    # quicker

The default test run (tests/server/test_fuzz.py) uses the same driver with few examples.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

#: the scripted student (a fake, named as such: fixed text, optional delay)
SCRIPTED_ENV = {
    "NIGHTOWL_MODELS__SCRIPTED_STUDENT__BACKEND": "scripted",
    "NIGHTOWL_MODELS__SCRIPTED_STUDENT__PARAMS__DEFAULT": "The answer is 4.",
    # fuzzing is one client sending as fast as it can: lift the per-key rate only
    "NIGHTOWL_SERVE_KEY_RATE": "100000/second",
    "NIGHTOWL_SERVE_TENANT_RATE": "100000/second",
}


@dataclass
class FuzzReport:
    """What one server answered."""

    server: str
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    healthy_after: bool = False
    seconds: float = 0.0

    def row(self) -> dict[str, object]:
        """A JSON-able summary."""
        return {
            "server": self.server,
            "requests": self.requests,
            "5xx": sum(n for s, n in self.statuses.items() if s >= 500),
            "statuses": dict(sorted(self.statuses.items())),
            "healthy_after": self.healthy_after,
            "seconds": round(self.seconds, 1),
            "first_5xx": self.server_errors[:3],
        }


def fuzz(base: str, key: str, examples: int, name: str) -> FuzzReport:
    """Fuzz every operation of ``base``'s schema; ``examples`` cases per operation and mode."""
    import httpx
    import requests
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.generation import GenerationMode

    report = FuzzReport(server=name)
    started = time.perf_counter()
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    session = requests.Session()
    auth = {"Authorization": f"Bearer {key}"}
    ops = [r.ok() for r in schema.get_all_operations()]

    def _runner(strategy: object, headers: dict[str, str]):  # type: ignore[no-untyped-def]
        @settings(max_examples=examples, deadline=None, database=None,
                  phases=[Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def run(case: schemathesis.Case) -> None:
            response = case.call(base_url=base, session=session, headers=headers, timeout=60)
            report.requests += 1
            report.statuses[response.status_code] += 1
            if response.status_code >= 500:
                body = response.text[:300]
                report.server_errors.append(
                    f"{case.method} {case.formatted_path} {json.dumps(case.body)[:300]} "
                    f"-> {response.status_code} {body}"
                )

        return run

    for op in ops:
        for mode, headers in (
            (GenerationMode.POSITIVE, auth),
            (GenerationMode.NEGATIVE, auth),
            (GenerationMode.POSITIVE, {}),  # no key: 401 where keys are required
        ):

            try:
                _runner(op.as_strategy(mode), headers)()
            except Unsatisfiable:  # nothing to break in an operation without inputs
                continue
    report.seconds = time.perf_counter() - started
    try:
        report.healthy_after = httpx.get(f"{base}/health", timeout=10).status_code == 200
    except httpx.HTTPError:
        report.healthy_after = False
    return report


@contextmanager
def servers(home: Path) -> Iterator[tuple[tuple[str, str], tuple[str, str]]]:
    """Both servers over the scripted student, one shared key store under ``home``.

    Yields ((serve base URL, key), (models-serve base URL, key)).
    """
    from tests.server.conftest import start_server

    env = {**os.environ, "NIGHTOWL_HOME": str(home), "PYTHONPATH": str(REPO), **SCRIPTED_ENV}
    key = subprocess.run(
        [sys.executable, "-m", "nightowl.cli.main", "keys", "create", "fuzz"],
        env=env, capture_output=True, text=True, check=True, timeout=120,
    ).stdout.strip()  # fmt: skip
    chat = start_server(
        ["serve", "--student", "scripted_student", "--no-demos", "--n", "2"],
        home / "serve.log", env=env, ready="/health",
    )  # fmt: skip
    try:
        models = start_server(
            ["models", "serve", "scripted_student", "--keys"], home / "models.log",
            env=env, ready="/health",
        )  # fmt: skip
        try:
            yield (chat.base, key), (models.base, key)
        finally:
            models.stop()
    finally:
        chat.stop()


def run_both(examples: int, home: Path) -> list[FuzzReport]:
    """Fuzz `nightowl serve` and `nightowl models serve`; one report each."""
    with servers(home) as ((chat, key), (models, mkey)):
        return [
            fuzz(chat, key, examples, "nightowl serve"),
            fuzz(models, mkey, examples, "nightowl models serve"),
        ]


def main() -> None:
    """Run the fuzz and print one JSON line per server; exit 1 on any 5xx."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--examples", type=int, default=700,
                   help="cases per operation and mode (x3 modes x operations per server)")
    p.add_argument("--out", default="bench/results/fuzz_servers.json")
    args = p.parse_args()
    home = Path(tempfile.mkdtemp(prefix="fuzz-servers-"))
    reports = run_both(args.examples, home)
    meta = {"machine": platform.processor() or platform.machine(), "loadavg": os.getloadavg(),
            "examples": args.examples}
    rows = [r.row() for r in reports]
    for row in rows:
        print(json.dumps(row))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": rows, **meta}, indent=1))
    bad = any(r["5xx"] or not r["healthy_after"] for r in rows)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
