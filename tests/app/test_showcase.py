import json

from typer.testing import CliRunner

from nightowl.app import ShowcaseOptions, run_showcase
from nightowl.app.events import EpisodeDone, Message, PhaseStarted
from nightowl.config import ModelSpec, load_settings
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


async def test_showcase_end_to_end_with_fake_student(tmp_path):
    s = fake_settings(tmp_path)
    out = tmp_path / "demo.json"
    opts = ShowcaseOptions(
        env="twx", game="coin", train_tasks=3, test_tasks=2, max_steps=30, out=out, concurrency=2
    )
    events: list = []
    rep = await run_showcase(s, opts, progress=events.append, embedder=HashingEmbedder())
    data = json.loads(out.read_text())
    assert [c["name"] for c in data["configs"]] == [
        "teacher",
        "student",
        "student+demos",
        "cascade",
        "margin",
    ]
    assert data["demos"] == rep.demos == 3 and rep.configs[0].success_rate == 1.0
    assert out.with_suffix(".png").stat().st_size > 1000
    assert "prices" in data and data["collection"]["total_cost"] > 0
    student = data["configs"][1]
    assert student["teacher_share"] == 0.0 and student["total_cost"] > 0
    # progress came out as events, one phase per run, one EpisodeDone per episode
    phases = [e.label for e in events if isinstance(e, PhaseStarted)]
    assert phases[0] == "collect demos (oracle, train)" and len(phases) == 6
    assert sum(isinstance(e, EpisodeDone) for e in events) == 3 + 5 * 2
    assert any("collection: 3/3 won" in m.text for m in events if isinstance(m, Message))
    # one verdict per student arm, against teacher-only on the same test tasks
    assert set(rep.verdicts) == {"student", "student+demos", "cascade", "margin"}
    assert all(("pays" in v) or ("does not pay" in v) for v in rep.verdicts.values())


def summary(name, successes, cost, episodes=4):
    from nightowl.app.runs import RunSummary

    return RunSummary(name=name, run_id="r", ladder=name, episodes=episodes,
                      successes=successes, success_rate=successes / episodes,
                      total_cost=cost * episodes, cost_per_episode=cost,
                      cost_of_pass=cost * episodes / max(successes, 1), teacher_share=0.5,
                      teacher_call_share=0.5, student_samples_per_step=1.0,
                      steps_per_episode=5.0, wall_s=1.0, overhead_ms_per_step=1.0,
                      reasons={}, config={})


def test_arm_verdict_says_whether_and_how_much_a_student_arm_pays():
    from nightowl.app.showcase import arm_verdict

    teacher = summary("teacher", 4, 0.006)
    assert arm_verdict(teacher, summary("margin", 4, 0.001)).startswith(
        "student + demos + margin cascade: pays 6.00x at equal success (4/4 vs 4/4); reaches")
    short = arm_verdict(teacher, summary("cascade", 3, 0.004))
    assert "below the 3x goal" in short
    # "equal success" is said only when the counts are equal; both counts always shown
    assert "at success one episode short of teacher-only (3/4 vs 4/4)" in short
    assert "equal success" not in short
    more = arm_verdict(summary("teacher", 3, 0.006), summary("cascade", 4, 0.002))
    assert "more success than teacher-only (4/4 vs 3/4)" in more
    assert "more than one episode short" in arm_verdict(teacher, summary("student", 2, 0.0001))
    assert "does not pay here: 1.17x the teacher-only cost" in arm_verdict(
        teacher, summary("margin", 4, 0.007))


async def test_showcase_rejects_bad_config_before_recording(tmp_path):
    import pytest

    from nightowl.errors import UnknownNameError

    s = fake_settings(tmp_path)
    opts = ShowcaseOptions(env="twx", game="coin", configs=["teacher", "nope"])
    with pytest.raises(UnknownNameError):
        await run_showcase(s, opts, embedder=HashingEmbedder())
    assert not (tmp_path / "demo").exists()


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
