"""Calibration remembers its machine; a run under another dtype says so and records it."""

from __future__ import annotations

import json
import sys

from nightowl.llm.dtype import resolve_dtype
from nightowl.llm.machine import ScoringMachine, dtype_note, scoring_machine


def test_dtype_note_only_when_the_dtype_differs():
    a = ScoringMachine(model="s", backend="transformers", dtype="bfloat16", cpu="EPYC 9B14")
    b = a.model_copy(update={"dtype": "float32", "cpu": "AMD EPYC"})
    note = dtype_note(a, b)
    assert note is not None and "bfloat16 on EPYC 9B14" in note and "float32" in note
    assert dtype_note(a, a) is None
    served = ScoringMachine(model="gpt", backend="OpenAICompatBackend")
    assert dtype_note(a, served) is None  # a server's dtype is not ours to know


def test_in_process_student_records_dtype_cpu_and_path():
    from nightowl.config import load_settings
    from nightowl.llm.registry import build_backend

    backend = build_backend("smollm2", load_settings())  # lazy: no weights are loaded
    m = scoring_machine(backend)
    assert m.dtype == resolve_dtype("auto")[0] and m.cpu and m.torch
    assert "prefill blocks of" in m.scoring_path


def test_run_with_a_calibration_from_another_dtype_warns_and_records(
    tmp_path, monkeypatch, capsys
):
    from nightowl.app.calibrate import CalibrationReport
    from nightowl.cli.main import main
    from nightowl.config import get_settings, load_settings
    from nightowl.distill.calibrate import CalibrateOptions
    from nightowl.ledger import Ledger
    from nightowl.storage import open_db

    here, _ = resolve_dtype("auto")
    other = "float32" if here == "bfloat16" else "bfloat16"
    machine = ScoringMachine(model="smollm2", backend="transformers", dtype=other,
                             cpu="Some Other CPU", scoring_path="prefill blocks of 64")
    rep = CalibrationReport(
        options=CalibrateOptions(env="twx", game="coin"), states=20,
        student_top1_agreement=0.5, candidates=[],
        chosen={"rule": "teacher", "spec": "teacher", "temperature": 0.0},
        target_met=True, student_pays=False, verdict="teacher only", wall_s=1.0,
        machine=machine,
    )
    path = tmp_path / "cal.json"
    path.write_text(rep.model_dump_json())
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    for k, v in {"NIGHTOWL_HOME": str(tmp_path / "home"), "NIGHTOWL_DATABASE_URL": url,
                 "NIGHTOWL_EMBEDDER": "hashing-fake"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(sys, "argv", [
        "nightowl", "run", "--env", "twx", "--game", "coin", "--tasks", "1", "--max-steps",
        "3", "--ladder", "teacher", "--calibration", str(path), "--json",
    ])
    get_settings.cache_clear()
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        get_settings.cache_clear()
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"calibrated with smollm2 in {other} on Some Other CPU" in err
    (run,) = Ledger(open_db(load_settings(database_url=url))).list_runs()
    config = Ledger(open_db(load_settings(database_url=url))).get_run(run.run_id).config
    assert config["calibrated_on"]["dtype"] == other
    assert config["scoring"]["dtype"] == here
    assert json.loads(out)["run_id"] == run.run_id
