"""Every script in examples/ runs from a fresh home (each one exercised here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

THINKER = """
[models.thinker]
backend = "scripted"
params = { default = "Mia has 3 x 12 = 36 apples, gives 7, buys 14: 43 apples. DONE\\nAnswer: 43" }
prices = { input = 0.1, cached_input = 0.025, output = 0.4 }
"""


def _run(script: str, cwd: Path, *args: str, **env: str) -> str:
    full = {**os.environ, "NIGHTOWL_HOME": str(cwd / ".nightowl"),
            "NIGHTOWL_EMBEDDER": "hashing-fake", **env}
    full.pop("NIGHTOWL_DATABASE_URL", None)
    r = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args], cwd=cwd, env=full,
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_every_example_is_tested() -> None:
    tested = {"collect_and_run.py", "ledger_report.py", "sleeptime_answer.py",
              "chat_assistant.py",
              "chat_openai_client.py"}  # in tests/server/test_serve.py (needs the server)
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_collect_and_run_then_ledger_report(tmp_path: Path) -> None:
    out = _run("collect_and_run.py", tmp_path, "--ladder", "teacher", "--demos", "2",
               "--tasks", "1")
    assert "collected 2 demos" in out and "teacher: 1/1 won" in out, out
    report = _run("ledger_report.py", tmp_path)
    lines = report.strip().splitlines()
    assert len(lines) == 2 and "collect:twx" in report and "success 100%" in report, report


def test_sleeptime_example_with_a_scripted_thinker(tmp_path: Path) -> None:
    (tmp_path / "nightowl.toml").write_text(THINKER)
    out = _run("sleeptime_answer.py", tmp_path, NIGHTOWL_SLEEP__MODEL="thinker")
    assert "learned context: stored" in out and "answer: '43'" in out, out


def test_chat_assistant_example_with_a_scripted_student(tmp_path: Path) -> None:
    models = ('{"fake": {"backend": "scripted", "params": {"default": "12 * 3 = 36. '
              'The answer is 36."}}}')
    out = _run("chat_assistant.py", tmp_path, NIGHTOWL_MODELS=models,
               NIGHTOWL_STUDENT_MODEL="fake")
    lines = out.strip().splitlines()
    assert lines[0].startswith("[student] agreement=1.0"), out
    assert any(ln.startswith("stream:") for ln in lines) and "thread revision" in lines[-1]
