import json

from rich.console import Console
from typer.testing import CliRunner

from nightowl.config import ModelSpec, load_settings
from nightowl.distill.demo import DemoOptions, run_demo
from nightowl.memory.embedder import HashingEmbedder


def fake_settings(tmp_path):
    base = load_settings(home=tmp_path)
    models = dict(base.models)
    models["fake"] = ModelSpec(
        backend="scripted",
        params={"function": "tests.agent.fakes:first_choice"},
        prices=base.models["smollm2"].prices,
    )
    return load_settings(home=tmp_path, models=models, student_model="fake")


async def test_demo_end_to_end_with_fake_student(tmp_path):
    s = fake_settings(tmp_path)
    out = tmp_path / "demo.json"
    opts = DemoOptions(
        env="twx", game="coin", train_tasks=3, test_tasks=2, max_steps=8, out=out, concurrency=2
    )
    rep = await run_demo(s, opts, Console(record=True, width=160), embedder=HashingEmbedder())
    data = json.loads(out.read_text())
    assert [c["name"] for c in data["configs"]] == [
        "teacher",
        "student",
        "student+demos",
        "cascade",
        "margin",
    ]
    assert data["demos"] == 3 and rep["configs"][0]["success_rate"] == 1.0
    assert out.with_suffix(".png").stat().st_size > 1000
    assert "prices" in data and data["collection"]["total_cost"] > 0
    student = data["configs"][1]
    assert student["teacher_call_fraction"] == 0.0 and student["total_cost"] > 0


def test_report_cli_unknown_run_exits_2(tmp_path, monkeypatch):
    monkeypatch.setenv("NIGHTOWL_HOME", str(tmp_path))
    from nightowl.cli.main import app
    from nightowl.config import get_settings

    get_settings.cache_clear()
    try:
        r = CliRunner().invoke(app, ["report", "nope"])
    finally:
        get_settings.cache_clear()
    assert r.exit_code != 0
