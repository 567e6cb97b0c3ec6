"""run_tasks: validation before recording, demo retrieval per step vs per episode."""

from __future__ import annotations

import pytest

from nightowl.agent.budget import EpisodeBudget
from nightowl.app import CollectRequest, Nightowl, RunSpec, collect_demos, run_tasks
from nightowl.envs.registry import select_tasks
from nightowl.errors import ConfigError, UnknownNameError
from nightowl.memory.embedder import HashingEmbedder
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
