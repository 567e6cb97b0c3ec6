"""The root builds its parts from its one `Settings`: the sleep-time service from
``settings.sleep``, the demo store from ``settings.demo_store`` (a ``"module:factory"``).

The toy store below keeps demos in a dict and ranks them by shared goal words; its
steps go to SQL through `SqlStepLog`, as the agent loop's step records must.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

from nightowl.agent.budget import EpisodeBudget
from nightowl.app import CollectRequest, Nightowl, RunSpec, collect_demos, run_tasks
from nightowl.cli.main import main
from nightowl.config import Settings, get_settings, load_settings
from nightowl.envs.registry import select_tasks
from nightowl.errors import ConfigError
from nightowl.memory._records import DemoWindow, EpisodeDemo, HistoryItem
from nightowl.memory.base import DemoStore
from nightowl.memory.embedder import HashingEmbedder
from nightowl.memory.steps import SqlStepLog
from tests.app.test_showcase import fake_settings

TOY = "tests.app.test_root_settings:toy_store"


class ToyStore(SqlStepLog, DemoStore):
    """Demos in a dict, retrieval by shared goal words; counts its retrievals."""

    def __init__(self, db: Any, **built_with: Any) -> None:
        super().__init__(db)
        self.built_with = built_with
        self.demos: dict[str, EpisodeDemo] = {}
        self.retrievals = 0

    def add_episodes(self, demos: Sequence[EpisodeDemo]) -> list[int]:
        for demo in demos:
            self.record_steps(demo.episode_id, demo.steps)
            self.demos[demo.episode_id] = demo
        order = list(self.demos)
        return [order.index(demo.episode_id) + 1 for demo in demos]

    def retrieve(
        self,
        goal: str,
        observation: str,
        history: Sequence[HistoryItem] = (),
        k_episodes: int = 4,
        k_steps: int = 2,
        window: int = 2,
        exclude_task_ids: Iterable[str] = (),
        *,
        exclude_episode_ids: Iterable[str] = (),
    ) -> list[DemoWindow]:
        self.retrievals += 1
        words = set(goal.split())
        skip = set(exclude_episode_ids)
        ranked = sorted(
            (d for d in self.demos.values() if d.episode_id not in skip),
            key=lambda d: -len(words & set(d.goal.split())),
        )
        order = list(self.demos)
        return [
            DemoWindow(
                demo_id=order.index(d.episode_id) + 1,
                episode_id=d.episode_id,
                task_id=d.task_id or "",
                env=d.env or "",
                goal=d.goal,
                source=d.source,
                steps=[s.model_copy() for s in d.steps[: 2 * window + 1]],
                hit_idxs=[0],
                episode_score=1.0,
                step_score=1.0,
                rank=rank,
            )  # fmt: skip
            for rank, d in enumerate(ranked[:k_episodes])
        ]

    def delete_episode(self, episode_id: str) -> bool:
        return self.demos.pop(episode_id, None) is not None

    def delete_run(self, run_id: str) -> int:
        return 0


def toy_store(*, db: Any, embedder: Any, memory_dir: Path | None, settings: Settings) -> ToyStore:
    """The factory named by ``demo_store``."""
    return ToyStore(db, embedder=embedder, memory_dir=memory_dir, settings=settings)


def not_a_store(**_: Any) -> object:
    return object()


def _toy_settings(tmp_path: Path) -> Settings:
    return fake_settings(tmp_path).model_copy(update={"demo_store": TOY})


async def test_a_configured_demo_store_serves_collection_and_runs(tmp_path: Path) -> None:
    embedder = HashingEmbedder()
    with Nightowl.open(_toy_settings(tmp_path), embedder=embedder,
                       memory_dir=tmp_path / "ix") as app:  # fmt: skip
        store = app.memory
        assert isinstance(store, ToyStore) and app.memory is store
        assert store.built_with == {
            "embedder": embedder,
            "memory_dir": tmp_path / "ix",
            "settings": app.settings,
        }
        assert store.db is app.db
        await collect_demos(app, CollectRequest(env="twx", game="coin", tasks=2))
        assert len(store.demos) == 2
        ids = select_tasks("twx", "test", 1, game="coin")
        summary = await run_tasks(app, RunSpec(
            name="toy", env="twx", split="test", task_ids=ids, ladder="student+demos",
            demos_per="episode", concurrency=1, budget=EpisodeBudget(max_steps=3),
        ))  # fmt: skip
        assert summary.episodes == 1 and store.retrievals >= 1
        # DemoMemory's index maintenance refuses another store with a clear error
        with pytest.raises(ConfigError, match="built-in demo memory.*ToyStore"):
            app.demo_memory("rebuilding the demo indexes").rebuild()
        assert store.refresh() is False  # the DemoStore default: nothing to reload


def test_demo_store_from_the_environment_and_bad_targets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NIGHTOWL_DEMO_STORE", TOY)
    settings = load_settings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 'a.db'}")
    assert settings.demo_store == TOY
    with Nightowl.open(settings) as app:
        assert isinstance(app.memory, ToyStore)
    for target, match in (
        ("tests.app.no_such_module:factory", "cannot load"),
        ("tests.app.test_root_settings:not_a_store", "not a nightowl.memory.base.DemoStore"),
    ):
        with Nightowl.open(settings.model_copy(update={"demo_store": target})) as app:
            with pytest.raises(ConfigError, match=match):
                _ = app.memory


def test_memory_cli_maintenance_is_one_line_error_with_another_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NIGHTOWL_DEMO_STORE", TOY)
    monkeypatch.setenv("NIGHTOWL_HOME", str(tmp_path))
    monkeypatch.setenv("NIGHTOWL_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    for command in ("stats", "rebuild"):
        monkeypatch.setattr(sys, "argv", ["nightowl", "memory", command])
        get_settings.cache_clear()
        with pytest.raises(SystemExit) as exit_:
            main()
        err = capsys.readouterr().err
        assert exit_.value.code == 2, err
        assert err.startswith(f"error: nightowl memory {command} works on nightowl's built-in")
        assert err.count("\n") == 1
    get_settings.cache_clear()


def test_root_sleep_service_takes_the_roots_settings(tmp_path: Path) -> None:
    settings = load_settings(
        home=tmp_path, database_url=f"sqlite:///{tmp_path / 's.db'}",
        sleep={"model": "thinker", "lease_s": 7, "max_rounds": 2},
    )  # fmt: skip
    with Nightowl.open(settings) as no:
        svc = no.sleep
        assert svc.settings is no.settings and svc.sleep is no.settings.sleep
        assert (svc.sleep.model, svc.sleep.lease_s) == ("thinker", 7)
        assert svc.sleep.generator().max_rounds == 2
        assert svc.db is no.db and svc.ledger is no.ledger


def test_root_memory_takes_the_memory_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``NIGHTOWL_MEMORY__*`` and a ``[memory]`` table reach the root's DemoMemory."""
    monkeypatch.setenv("NIGHTOWL_MEMORY__GOAL_VALUES", "keep")
    monkeypatch.setenv("NIGHTOWL_THREADS", "2")
    settings = load_settings(home=tmp_path, embedder="hashing-fake")
    with Nightowl.open(settings) as no:
        assert no.memory.settings.goal_values == "keep"
        assert no.memory.settings.threads == 2  # unset: follows the top-level threads
    monkeypatch.delenv("NIGHTOWL_MEMORY__GOAL_VALUES")
    (tmp_path / "nightowl.toml").write_text("[memory]\nw_hist = 0.25\nthreads = 1\n")
    monkeypatch.chdir(tmp_path)
    settings = load_settings(home=tmp_path, embedder="hashing-fake")
    with Nightowl.open(settings) as no:
        mem = no.memory.settings
        assert (mem.goal_values, mem.w_hist, mem.threads) == ("mask", 0.25, 1)
    monkeypatch.setenv("NIGHTOWL_MEMORY__W_OBS", "-1")
    with pytest.raises(ConfigError, match=r"memory\.w_obs \(NIGHTOWL_MEMORY__W_OBS\)"):
        load_settings(home=tmp_path)
