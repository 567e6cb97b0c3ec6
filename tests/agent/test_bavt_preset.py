"""The `bavt` ladder preset: student -> BAVT search -> teacher, on a real TWX game."""

from nightowl.agent.presets import build_ladder
from nightowl.app import Nightowl, RunSpec, run_tasks
from nightowl.config import ModelSpec, load_settings
from nightowl.envs.registry import select_tasks
from nightowl.memory.embedder import HashingEmbedder


def _settings(tmp_path):
    base = load_settings(home=tmp_path)
    models = dict(base.models)
    models["fake"] = ModelSpec(
        backend="scripted",
        params={"function": "tests.agent.fakes:cycling_choice"},
        prices=base.models["smollm2"].prices,
    )
    return load_settings(home=tmp_path, models=models, student_model="fake")


def test_bavt_preset_has_three_tiers(tmp_path):
    wb = Nightowl.open(_settings(tmp_path), embedder=HashingEmbedder())
    run_id = wb.ledger.start_run("t", "run", {})
    ladder = build_ladder("bavt", settings=wb.settings, ledger=wb.ledger, run_id=run_id,
                          student_backend=wb.backend)
    assert [t.name for t in ladder.tiers] == ["student", "bavt", "teacher"]


async def test_bavt_preset_runs_episodes_and_bills_search(tmp_path):
    wb = Nightowl.open(_settings(tmp_path), embedder=HashingEmbedder())
    ids = select_tasks("twx", "test", 1, game="coin")
    spec = RunSpec(
        name="bavt", env="twx", split="test", task_ids=ids, ladder="bavt", retrieve=False,
        concurrency=1,
    )
    summary = await run_tasks(wb, spec)
    report = wb.ledger.run_report(summary.run_id)
    # The disagreeing student always escalates; the search proposes and scores with the
    # (metered) student under roles bavt/critic before the oracle teacher acts.
    roles = set(report.roles)
    assert {"student", "bavt", "critic"} <= roles, roles
    assert report.n_episodes == 1
    wb.close()
