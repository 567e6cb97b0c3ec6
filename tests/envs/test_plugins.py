"""Environments from other packages: the example plugin (examples/toy_env_plugin) is found
through a real ``nightowl.envs`` entry point and plays an episode through `nightowl run`.

The plugin is made importable the way an installed distribution is: its source folder
and a ``*.dist-info`` folder (METADATA + entry_points.txt) on the path, which is what
``importlib.metadata`` reads after ``pip install``; the venv itself is not touched.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nightowl.envs import registry

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "examples" / "toy_env_plugin"


@pytest.fixture
def plugin_path(tmp_path, monkeypatch):
    """The example plugin 'installed' on sys.path (source + dist-info with its entry point)."""
    info = tmp_path / "nightowl_toy_env_plugin-0.1.0.dist-info"
    info.mkdir()
    info.joinpath("METADATA").write_text(
        "Metadata-Version: 2.1\nName: nightowl-toy-env-plugin\nVersion: 0.1.0\n"
    )
    info.joinpath("entry_points.txt").write_text(
        '[nightowl.envs]\ntoy = toy_env_plugin:CounterEnv\n'
    )
    monkeypatch.syspath_prepend(str(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.plugin_environments.cache_clear()
    yield os.pathsep.join([str(tmp_path), str(PLUGIN)])
    registry.plugin_environments.cache_clear()


def test_the_entry_point_in_the_example_matches_the_class():
    text = (PLUGIN / "pyproject.toml").read_text()
    assert '[project.entry-points."nightowl.envs"]' in text
    assert 'toy = "toy_env_plugin:CounterEnv"' in text


def test_plugin_env_is_listed_and_built(plugin_path):
    assert registry.env_names()[-1] == "toy"
    env = registry.make_env("toy")
    obs = env.reset(env.tasks("test")[0].task_id)
    assert obs.goal.startswith("count to")
    while (action := env.expert_action()) != "done":
        assert not env.step(action).done
    assert env.step("done").won
    assert registry.select_tasks("toy", "dev", 2) == ["toy/count/dev/10000", "toy/count/dev/10001"]


def test_builtin_names_win_over_plugins(plugin_path, tmp_path):
    ep = tmp_path / "nightowl_toy_env_plugin-0.1.0.dist-info" / "entry_points.txt"
    ep.write_text("[nightowl.envs]\ntwx = toy_env_plugin:CounterEnv\n")
    registry.plugin_environments.cache_clear()
    assert registry.env_class("twx").__name__ == "TextWorldExpressEnv"


def test_unknown_env_lists_plugins(plugin_path):
    from nightowl.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match="toy"):
        registry.env_class("nope")


def test_nightowl_run_plays_the_plugin_env(plugin_path, tmp_path):
    env = {**os.environ, "PYTHONPATH": plugin_path, "NIGHTOWL_HOME": str(tmp_path / "home"),
           "NIGHTOWL_EMBEDDER": "hashing-fake"}
    out = subprocess.run(
        [sys.executable, "-m", "nightowl.cli.main", "run", "--env", "toy", "--ladder",
         "teacher", "--tasks", "2", "--max-steps", "12", "--json"],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout)
    assert summary["episodes"] == 2 and summary["successes"] == 2
