"""Backends and ladder presets from other packages: the example plugin
(examples/toy_env_plugin) adds the backend kind ``echo`` (``nightowl.backends``) and the
ladder ``toy-cascade`` (``nightowl.presets``), found through real entry points, and
`nightowl run` plays its toy environment with both.

As in tests/envs/test_plugins.py the plugin is 'installed' as a distribution is: its
source folder and a ``*.dist-info`` folder (METADATA + entry_points.txt) on the path,
which is what ``importlib.metadata`` reads after ``pip install``; the venv is not touched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nightowl.agent import presets
from nightowl.config import ModelSpec, load_settings
from nightowl.errors import ConfigError, UnknownNameError
from nightowl.llm import registry
from nightowl.llm.base import GenerationRequest

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "examples" / "toy_env_plugin"
ENTRY_POINTS = (
    "[nightowl.envs]\ntoy = toy_env_plugin:CounterEnv\n\n"
    "[nightowl.backends]\necho = toy_env_plugin.backend:EchoBackend\n\n"
    "[nightowl.presets]\ntoy-cascade = toy_env_plugin.backend:TOY_CASCADE\n"
)


def _clear() -> None:
    from nightowl.envs import registry as envs

    envs.plugin_environments.cache_clear()
    registry.plugin_backends.cache_clear()
    presets.plugin_presets.cache_clear()
    presets._load_plugin_preset.cache_clear()


@pytest.fixture
def plugin_path(tmp_path, monkeypatch):
    """The example plugin on sys.path with a dist-info holding its three entry points."""
    info = tmp_path / "nightowl_toy_env_plugin-0.1.0.dist-info"
    info.mkdir()
    info.joinpath("METADATA").write_text(
        "Metadata-Version: 2.1\nName: nightowl-toy-env-plugin\nVersion: 0.1.0\n"
    )
    info.joinpath("entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("NIGHTOWL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NIGHTOWL_CONFIG", str(tmp_path / "none.toml"))
    _clear()
    yield os.pathsep.join([str(tmp_path), str(PLUGIN)])
    _clear()


def _rewrite(tmp_path: Path, text: str) -> None:
    (tmp_path / "nightowl_toy_env_plugin-0.1.0.dist-info" / "entry_points.txt").write_text(text)
    _clear()


def test_the_example_pyproject_registers_backend_and_preset():
    text = (PLUGIN / "pyproject.toml").read_text()
    assert '[project.entry-points."nightowl.backends"]' in text
    assert 'echo = "toy_env_plugin.backend:EchoBackend"' in text
    assert '[project.entry-points."nightowl.presets"]' in text
    assert 'toy-cascade = "toy_env_plugin.backend:TOY_CASCADE"' in text


async def test_plugin_backend_kind_is_built_from_a_registry_entry(plugin_path):
    assert "echo" in registry.backend_kinds()
    spec = ModelSpec(backend="echo", params={"spread": "true"})  # a plugin kind validates
    backend = registry.create_backend("e", spec, load_settings())
    assert type(backend).__name__ == "EchoBackend" and backend.name == "e"
    res = await backend.generate(GenerationRequest(prompt="Action:", n=3,
                                                   choices=(" inc", " dec")))
    assert res.texts == [" inc", " dec", " inc"]
    assert backend.calls == 1 and backend.usage.completion_tokens == 3  # type: ignore[attr-defined]


def test_plugin_backend_kind_from_environment_settings(plugin_path, monkeypatch):
    monkeypatch.setenv("NIGHTOWL_MODELS__ECHO__BACKEND", "echo")
    monkeypatch.setenv("NIGHTOWL_MODELS__ECHO__PARAMS__ANSWER", "look")
    settings = load_settings()
    assert settings.model("echo").backend == "echo"
    backend = registry.create_backend("echo", settings.model("echo"), settings)
    assert backend.answer == "look"  # type: ignore[attr-defined]


def test_builtin_backend_kinds_win_over_plugins(plugin_path, tmp_path):
    _rewrite(tmp_path, "[nightowl.backends]\nscripted = toy_env_plugin.backend:EchoBackend\n")
    backend = registry.create_backend("s", ModelSpec(backend="scripted"), load_settings())
    assert type(backend).__name__ == "ScriptedModel"


def test_unknown_backend_kind_lists_builtins_and_plugins(plugin_path):
    with pytest.raises(ConfigError, match=r"unknown backend kind 'nope'; known: \[") as info:
        registry.create_backend("x", ModelSpec(backend="nope"), load_settings())
    message = str(info.value)
    assert "\n" not in message and "'echo'" in message and "'scripted'" in message


def test_broken_plugin_backend_is_one_config_error(plugin_path, tmp_path):
    _rewrite(tmp_path, "[nightowl.backends]\nbad = toy_env_plugin.nowhere:Missing\n")
    with pytest.raises(ConfigError, match="backend kind 'bad'.*cannot be imported"):
        registry.create_backend("x", ModelSpec(backend="bad"), load_settings())
    _rewrite(tmp_path, "[nightowl.backends]\nbad = toy_env_plugin.backend:TOY_CASCADE\n")
    with pytest.raises(ConfigError, match="not a ModelBackend"):
        registry.create_backend("x", ModelSpec(backend="bad"), load_settings())


def test_plugin_preset_is_listed_and_validated(plugin_path):
    assert list(presets.PRESETS)[-1] == "toy-cascade" and "toy-cascade" in presets.PRESETS
    assert presets.ladder_syntax().endswith("|toy-cascade")
    preset = presets.PRESETS["toy-cascade"]
    assert preset.student == "cascade" and not preset.demos
    choice = presets.validate_ladder("toy-cascade", None, "smollm2", "oracle", load_settings())
    assert choice.rule is not None and choice.rule.name.startswith("unanimity")
    with pytest.raises(UnknownNameError, match="toy-cascade"):
        presets.validate_ladder("nope", None, None, "oracle", load_settings())


def test_listing_presets_does_not_import_the_plugin(plugin_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "toy_env_plugin.backend", raising=False)
    assert "toy-cascade" in presets.ladder_syntax()
    assert "toy_env_plugin.backend" not in sys.modules
    presets.PRESETS["toy-cascade"]
    assert "toy_env_plugin.backend" in sys.modules


def test_builtin_presets_win_and_bad_presets_are_config_errors(plugin_path, tmp_path):
    _rewrite(tmp_path, "[nightowl.presets]\nteacher = toy_env_plugin.backend:TOY_CASCADE\n"
                       "bad = toy_env_plugin.backend:EchoBackend\n")
    assert presets.PRESETS["teacher"].student == "none"
    assert list(presets.PRESETS).count("teacher") == 1
    with pytest.raises(ConfigError, match="not a Preset"):
        presets.validate_ladder("bad", None, None, "oracle", load_settings())


def test_nightowl_run_uses_the_plugin_backend_and_preset(plugin_path, tmp_path):
    env = {**os.environ, "PYTHONPATH": plugin_path, "NIGHTOWL_HOME": str(tmp_path / "home"),
           "NIGHTOWL_EMBEDDER": "hashing-fake", "NIGHTOWL_MODELS__ECHO__BACKEND": "echo",
           "NIGHTOWL_MODELS__ECHO__PARAMS__SPREAD": "true"}
    help_out = subprocess.run(
        [sys.executable, "-c", "import sys; from nightowl.cli import _options; "
         "print(_options.LADDER.help, 'toy_env_plugin.backend' in sys.modules)"],
        env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert help_out.stdout.strip().endswith("|toy-cascade False"), help_out.stderr[-2000:]
    out = subprocess.run(
        [sys.executable, "-m", "nightowl.cli.main", "run", "--env", "toy", "--ladder",
         "toy-cascade", "--student", "echo", "--tasks", "2", "--max-steps", "12", "--json"],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout)
    assert summary["ladder"] == "toy-cascade" and summary["config"]["student"] == "echo"
    assert summary["config"]["scoring"]["backend"] == "EchoBackend"
    # the echo student's two samples always disagree, so the oracle teacher acts and wins
    assert summary["episodes"] == 2 and summary["successes"] == 2
    assert summary["student_samples_per_step"] == 2.0
    assert all(e["student_samples"] > 0 for e in summary["episodes_detail"])
