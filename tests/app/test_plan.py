"""The run plan: a spec is resolved once into an immutable plan that every layer builds from.

- the student (name and dtype), teacher, preset, rule object and budget are decided by
  `RunSpec.resolved`; the plan is frozen;
- one default step budget (`DEFAULT_MAX_STEPS`), an environment's own where it declares
  one, an explicit budget as given;
- `nightowl run` resolves the student exactly once per run (a counting resolver);
- `--student-dtype` on every command that runs the student, recorded with the run.
"""

from __future__ import annotations

import json
import sys

import pytest
from pydantic import ValidationError

from nightowl.agent.acceptance import LogprobMargin, Unanimity
from nightowl.agent.budget import DEFAULT_MAX_STEPS, DEMO_MAX_STEPS, EpisodeBudget
from nightowl.app import CollectRequest, Nightowl, ShowcaseOptions
from nightowl.app.plan import RunPlan, RunSpec, default_budget_steps, resolve_student
from nightowl.config import get_settings, load_settings
from nightowl.errors import ConfigError
from tests.agent.fakes import fake_student_env
from tests.app.test_showcase import fake_settings


def spec(**kw) -> RunSpec:  # type: ignore[no-untyped-def]
    return RunSpec(**{"name": "x", "env": "twx", "split": "test", "task_ids": ["t"], **kw})


def test_a_spec_resolves_into_a_frozen_plan_with_every_decision_made(tmp_path):
    settings = fake_settings(tmp_path)
    plan = spec().resolved(settings)
    assert isinstance(plan, RunPlan)
    assert plan.student.name == "fake" and plan.student.dtype is None
    assert plan.teacher == "oracle" and plan.ladder == "cascade" and plan.fallback == "best"
    assert isinstance(plan.rule, Unanimity) and plan.rule.spec() == "unanimity:3"
    assert plan.rule_given is None and plan.uses_demos
    assert plan.budget.max_steps == DEFAULT_MAX_STEPS
    assert isinstance(spec(ladder="margin").resolved(settings).rule, LogprobMargin)
    assert spec(ladder="student").resolved(settings).rule.spec() == "unanimity:1"  # greedy
    with pytest.raises(ValidationError):
        plan.student = plan.student  # type: ignore[misc]
    with pytest.raises(ValidationError):
        plan.budget.max_steps = 3  # type: ignore[misc]  # the budget is frozen too
    moved = plan.with_tasks(["a", "b"])
    assert moved.task_ids == ("a", "b") and plan.task_ids == ("t",)
    assert moved.student == plan.student and moved.rule is plan.rule


def test_one_default_step_budget_unless_given_or_declared_by_the_environment(
    tmp_path, monkeypatch
):
    from nightowl.envs.registry import env_class

    settings = fake_settings(tmp_path)
    assert default_budget_steps("twx") == DEFAULT_MAX_STEPS == 40 and DEMO_MAX_STEPS == 15
    assert EpisodeBudget().max_steps == DEFAULT_MAX_STEPS  # the agent layer's default too
    given = spec(budget=EpisodeBudget(max_steps=7)).resolved(settings)
    assert given.budget.max_steps == 7
    unlimited = spec(budget=EpisodeBudget(max_steps=None)).resolved(settings)
    assert unlimited.budget.max_steps is None  # None is a choice: unlimited
    cost_only = spec(budget=EpisodeBudget(max_cost_usd=0.5)).resolved(settings)
    assert cost_only.budget.max_steps == DEFAULT_MAX_STEPS and cost_only.budget.max_cost_usd == 0.5
    # an environment that needs longer (or shorter) episodes declares its own default
    monkeypatch.setattr(env_class("twx"), "default_budget_steps", 12, raising=False)
    assert spec().resolved(settings).budget.max_steps == 12
    assert spec(budget=EpisodeBudget(max_steps=7)).resolved(settings).budget.max_steps == 7
    assert CollectRequest(env="twx").max_steps is None  # the plan decides
    assert ShowcaseOptions().max_steps == DEMO_MAX_STEPS
    assert ShowcaseOptions().collect_max_steps is None


def test_student_dtype_sets_the_in_process_students_dtype_param(tmp_path):
    fake = fake_settings(tmp_path)
    settings = load_settings(home=tmp_path, models=fake.models)  # smollm2: in-process
    plan = spec(student_dtype="float32").resolved(settings)
    assert plan.student.name == settings.student_model and plan.student.dtype == "float32"
    assert plan.student.settings(settings).models[plan.student.name].params["dtype"] == "float32"
    assert plan.student.settings(settings).student_model == settings.student_model
    with Nightowl.open(settings) as app:
        backend = plan.student.backend(app)  # lazy: no weights are loaded
        assert backend.dtype == "float32"
        assert plan.student.backends(app)("fake") is app.backend("fake")  # the teacher's
        assert spec().resolved(settings).student.backends(app) == app.backend  # as before
    with pytest.raises(ConfigError, match="student-dtype"):
        spec(student_dtype="int3").resolved(settings)
    # a served or scripted student has no dtype to set: dropped, as `nightowl demo` did
    assert resolve_student(fake, None, "float32").dtype is None


def test_the_plan_travels_as_json_and_comes_back_the_same(tmp_path):
    from nightowl.app.distributed import EpisodeJob

    settings = load_settings(home=tmp_path)
    for ladder in ("cascade", "margin", "student", "teacher", "bavt"):
        plan = spec(ladder=ladder, student_dtype="bfloat16",
                    budget=EpisodeBudget(max_steps=9, max_wall_s=5.0)).resolved(settings)
        payload = json.loads(json.dumps(EpisodeJob(run_id="r", plan=plan).model_dump(mode="json")))
        back = EpisodeJob.model_validate(payload).plan
        assert back is not None and back.model_dump() == plan.model_dump()
        assert (back.rule.spec() if back.rule else None) == payload["plan"]["rule"]
    with pytest.raises(ValidationError, match="carries a plan"):
        EpisodeJob(run_id="r")


def _cli_env(tmp_path, monkeypatch, *, fake_student: bool) -> str:
    return fake_student_env(monkeypatch, tmp_path, student=fake_student)


def _cli(monkeypatch, *args: str) -> int:
    from nightowl.cli.main import main

    monkeypatch.setattr(sys, "argv", ["nightowl", *args])
    get_settings.cache_clear()  # the CLI reads the settings once per process
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        get_settings.cache_clear()
    return 0


def _configs(url: str) -> list[dict]:
    from nightowl.ledger import Ledger
    from nightowl.storage import open_db

    ledger = Ledger(open_db(load_settings(database_url=url)))
    return [ledger.get_run(r.run_id).config for r in ledger.list_runs()]


def test_nightowl_run_resolves_the_student_once_and_takes_the_one_default_budget(
    tmp_path, monkeypatch, capsys, resolutions
):
    url = _cli_env(tmp_path, monkeypatch, fake_student=True)
    code = _cli(monkeypatch, "run", "--env", "twx", "--game", "coin", "--tasks", "2",
                "--ladder", "cascade", "--json")
    assert code == 0, capsys.readouterr().err
    assert resolutions == [(None, None)]  # once per run, for two episodes
    (config,) = _configs(url)
    assert config["student"] == "fake" and config["student_dtype"] is None
    assert config["budget"]["max_steps"] == DEFAULT_MAX_STEPS  # `run` had 20 before
    assert json.loads(capsys.readouterr().out)["steps_per_episode"] <= DEFAULT_MAX_STEPS


def test_nightowl_run_takes_student_dtype_through_the_plan_and_records_it(
    tmp_path, monkeypatch, capsys, resolutions
):
    url = _cli_env(tmp_path, monkeypatch, fake_student=False)  # smollm2, in-process
    code = _cli(monkeypatch, "run", "--env", "twx", "--game", "coin", "--tasks", "1",
                "--max-steps", "3", "--ladder", "teacher", "--student-dtype", "float32",
                "--json")
    assert code == 0, capsys.readouterr().err
    assert resolutions == [(None, "float32")]
    (config,) = _configs(url)
    assert config["student_dtype"] == "float32" and config["scoring"]["dtype"] == "float32"
    assert config["budget"]["max_steps"] == 3
    # a bad dtype is a one-line user error before anything is recorded
    code = _cli(monkeypatch, "run", "--env", "twx", "--game", "coin", "--tasks", "1",
                "--ladder", "teacher", "--student-dtype", "int3")
    err = capsys.readouterr().err
    assert code == 2 and "student-dtype must be one of" in err
    assert len(_configs(url)) == 1


def test_nightowl_collect_takes_the_one_default_budget(tmp_path, monkeypatch, capsys,
                                                       resolutions):
    url = _cli_env(tmp_path, monkeypatch, fake_student=True)
    code = _cli(monkeypatch, "collect", "--env", "twx", "--game", "coin", "--tasks", "1",
                "--student-dtype", "float32", "--json")
    assert code == 0, capsys.readouterr().err
    assert resolutions == [(None, "float32")]
    (config,) = _configs(url)
    assert config["budget"]["max_steps"] == DEFAULT_MAX_STEPS
    assert config["student_dtype"] is None  # the scripted student has no dtype


def test_every_command_that_runs_the_student_takes_student_dtype_and_one_budget_help():
    import typer.main

    from nightowl.cli.main import app

    root = typer.main.get_command(app)
    for name in ("run", "collect", "calibrate", "demo"):
        params = {p.name: p for p in root.commands[name].params}  # type: ignore[attr-defined]
        assert "student_dtype" in params, name
        steps = params["max_steps"]
        assert steps.default is None, name  # no literal budget in a command's signature
        assert str(DEFAULT_MAX_STEPS) in (steps.help or ""), name


async def test_calibrate_rollouts_take_the_one_default_budget_unless_set(tmp_path, monkeypatch):
    """`calibrate`'s dev rollouts: the environment's default budget (30 before), as the runs
    being calibrated for, unless ``rollout_max_steps`` is set; one student for all."""
    from types import SimpleNamespace

    import nightowl.app.calibrate as cal

    settings = fake_settings(tmp_path)
    budgets: list = []

    async def scripted_run_tasks(app, spec, progress=None):  # type: ignore[no-untyped-def]
        plan = spec.resolved(settings)
        budgets.append((plan.budget.max_steps, plan.student))
        return SimpleNamespace(run_id="r", episodes=3, successes=3, success_rate=1.0,
                               cost_per_episode=1.0, teacher_share=0.5, steps_per_episode=4.0,
                               config={"budget": plan.budget.model_dump()})

    monkeypatch.setattr(cal, "run_tasks", scripted_run_tasks)
    pool = [{"rule": "unanimity:1", "spec": "unanimity:1", "temperature": 0.5,
             "predicted_success": 0.9, "predicted_cost_per_episode": 0.1}]
    student = resolve_student(settings)
    unset = cal.CalibrateOptions(env="twx", game="coin", verify=1)
    teacher, _ = await cal.play_on_dev(None, unset, pool, pool[0], ["a"], student=student)
    assert teacher["dev_max_steps"] == DEFAULT_MAX_STEPS
    assert {b for b, _ in budgets} == {DEFAULT_MAX_STEPS} and {s for _, s in budgets} == {student}
    budgets.clear()
    given = cal.CalibrateOptions(env="twx", game="coin", verify=1, rollout_max_steps=8)
    await cal.play_on_dev(None, given, pool, pool[0], ["a"], student=student)
    assert {b for b, _ in budgets} == {8}
