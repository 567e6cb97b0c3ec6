"""run_tasks: validation before recording, demo retrieval per step vs per episode."""

from __future__ import annotations

import pytest

from nightowl.agent.budget import EpisodeBudget
from nightowl.app import CollectRequest, Nightowl, RunSpec, collect_demos, run_tasks
from nightowl.envs.registry import select_tasks
from nightowl.errors import ConfigError, UnknownNameError
from nightowl.memory.embedder import HashingEmbedder
from tests.agent.fakes import fake_student_env
from tests.app.test_showcase import fake_settings


@pytest.mark.parametrize("mode, expect_calls", [("step", 5), ("episode", 1)])
async def test_demos_retrieved_per_step_or_once_per_episode(
    tmp_path, monkeypatch, mode, expect_calls
):
    with Nightowl.open(fake_settings(tmp_path), embedder=HashingEmbedder()) as app:
        await collect_demos(app, CollectRequest(env="twx", game="coin", tasks=2))
        calls = []
        real = app.memory.retrieve
        monkeypatch.setattr(
            app.memory, "retrieve", lambda *a, **k: calls.append(1) or real(*a, **k)
        )
        ids = select_tasks("twx", "test", 1, game="coin")
        s = await run_tasks(app, RunSpec(name=mode, env="twx", split="test", task_ids=ids,
                                         ladder="student+demos", demos_per=mode, concurrency=1,
                                         budget=EpisodeBudget(max_steps=5)))
    assert s.steps_per_episode == 5 and len(calls) == expect_calls
    assert s.config["demos_per"] == mode and s.config["prompt"]["window"] >= 1


async def test_bad_spec_is_refused_before_a_run_is_recorded(tmp_path):
    with Nightowl.open(fake_settings(tmp_path), embedder=HashingEmbedder()) as app:
        for spec, err in (
            (RunSpec(name="x", env="twx", split="test", task_ids=[], ladder="nope"),
             UnknownNameError),
            (RunSpec(name="x", env="twx", split="test", task_ids=[], ladder="margin",
                     rule="unanimity:3"), ConfigError),
            (RunSpec(name="x", env="twx", split="test", task_ids=[], demos_per="sometimes"),
             ConfigError),
            (RunSpec(name="x", env="twx", split="test", task_ids=[],
                     repeats="loop"), ConfigError),  # type: ignore[arg-type]
            (RunSpec(name="x", env="nope", split="test", task_ids=[]), UnknownNameError),
        ):
            with pytest.raises(err):
                await run_tasks(app, spec)
        assert app.ledger.list_runs() == []


def test_cli_run_takes_the_repeat_and_backtrack_policies_and_refuses_bad_ones(
        tmp_path, monkeypatch, capsys):
    """`nightowl run --repeats escalate --backtrack allow` reaches the run's config (the
    ladder is built from it); an unknown policy is a one-line user error
    (exit 2) before anything is recorded."""
    import sys

    from nightowl.cli.main import main
    from nightowl.config import get_settings, load_settings
    from nightowl.ledger import Ledger
    from nightowl.storage import open_db

    url = fake_student_env(monkeypatch, tmp_path)

    def cli(*args: str) -> int:
        monkeypatch.setattr(sys, "argv", ["nightowl", "run", "--env", "twx", "--game", "coin",
                                          "--tasks", "1", "--max-steps", "3", *args])
        try:
            main()
        except SystemExit as exc:
            return int(exc.code or 0)
        return 0

    get_settings.cache_clear()  # the CLI reads the settings once per process
    try:
        code = cli("--repeats", "loop")
        err = capsys.readouterr().err
        code_back = cli("--backtrack", "never")
        err_back = capsys.readouterr().err
        ok = cli("--repeats", "escalate", "--backtrack", "allow")
    finally:
        get_settings.cache_clear()
    assert code == 2
    assert "repeats must be one of explore, escalate" in err and len(err.strip().splitlines()) == 1
    assert code_back == 2 and "backtrack must be one of avoid, allow" in err_back
    ledger = Ledger(open_db(load_settings(database_url=url)))
    assert ok == 0
    (run,) = ledger.list_runs()  # the bad policy recorded nothing
    config = ledger.get_run(run.run_id).config
    assert config["repeats"] == "escalate" and config["backtrack"] == "allow"
