"""Settings: defaults, env/TOML overrides merged into the shipped model registry, clear errors."""

import pytest

from nightowl.config import FRONTIER_PRICES, ModelSpec, Prices, load_settings
from nightowl.errors import ConfigError, UnknownNameError


def test_defaults_embedded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert s.resolved_database_url.startswith("sqlite:///")
    assert s.broker_url is None
    assert s.model("smollm2").backend == "transformers"
    assert s.model(s.teacher_price_model).prices == FRONTIER_PRICES


def test_env_override_changes_one_price(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NIGHTOWL_MODELS__SMOLLM2__PRICES__INPUT", "0.2")
    s = load_settings()
    assert s.models["smollm2"].prices.input == 0.2
    assert s.models["smollm2"].prices.output == 0.4  # untouched
    assert s.models["smollm2"].backend == "transformers"


def test_toml_adds_models_without_dropping_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nightowl.toml").write_text(
        'oracle_output_tokens = 77\n[models.teacher]\nbackend = "openai"\n'
        'params = { base_url = "http://127.0.0.1:9/v1" }\n'
        "prices = { input = 1.0, output = 2.0 }\n"
    )
    s = load_settings()
    assert s.oracle_output_tokens == 77
    assert {"smollm2", "teacher"} <= set(s.models)
    assert s.models["teacher"].prices == Prices(input=1.0, output=2.0)


def test_explicit_models_merge(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = load_settings(models={"fake": ModelSpec(backend="scripted")})
    assert {"smollm2", "fake"} <= set(s.models)


@pytest.mark.parametrize(
    "toml",
    [
        'oracle_output_tokens = "many"\n',
        "oracle_output_tokens = -1\n",
        "nonsense_key = 1\n",
        "threads = [\n",
    ],
)
def test_bad_config_is_one_line_config_error(tmp_path, monkeypatch, toml):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nightowl.toml").write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "\n" not in str(err.value)


def test_unknown_model_lists_known(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UnknownNameError, match="smollm2"):
        load_settings().model("gpt-17")


def test_prices_cost_counts_cached_tokens_at_cached_rate():
    p = Prices(input=2.0, cached_input=1.0, output=8.0)
    assert p.cost(1_000_000, 500_000, 1_000_000) == pytest.approx(1.0 + 0.5 + 8.0)


def test_sleep_section_from_env_with_the_nested_delimiter(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NIGHTOWL_SLEEP__MODEL", "vllm-local")
    monkeypatch.setenv("NIGHTOWL_SLEEP__VISIBILITY_TIMEOUT_S", "77")
    s = load_settings(sleep={"max_rounds": 5})  # init args merge with the env, field by field
    assert (s.sleep.model, s.sleep.visibility_timeout_s, s.sleep.max_rounds) == (
        "vllm-local",
        77,
        5,
    )
    assert s.sleep.lease_s == 120.0  # untouched default
    assert s.sleep.generator().model == "vllm-local"


def test_sleep_section_from_a_toml_table_env_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nightowl.toml").write_text(
        '[sleep]\nmodel = "thinker"\nprobe = "prometheus"\nlease_s = 9\n'
    )
    monkeypatch.setenv("NIGHTOWL_SLEEP__LEASE_S", "11")
    s = load_settings()
    assert (s.sleep.model, s.sleep.probe, s.sleep.lease_s) == ("thinker", "prometheus", 11.0)


@pytest.mark.parametrize(
    "env, name",
    [
        ({"NIGHTOWL_SLEEP__TASK_TIME_LIMIT_S": "0"}, "NIGHTOWL_SLEEP__TASK_TIME_LIMIT_S"),
        ({"NIGHTOWL_SLEEP__PROBE": "sonar"}, "NIGHTOWL_SLEEP__PROBE"),
        (
            {"NIGHTOWL_SLEEP__TASK_SOFT_TIME_LIMIT_S": "2000"},
            "NIGHTOWL_SLEEP__TASK_SOFT_TIME_LIMIT_S",
        ),  # soft >= hard (1900)
        ({"NIGHTOWL_SLEEP__NONSENSE": "1"}, "NIGHTOWL_SLEEP__NONSENSE"),
        ({"NIGHTOWL_SLEEP_MODEL": "old"}, "NIGHTOWL_SLEEP__MODEL"),  # the old name, refused
    ],
)
def test_bad_sleep_setting_is_one_line_error_naming_the_variable(tmp_path, monkeypatch, env, name):
    monkeypatch.chdir(tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert name in str(err.value) and "\n" not in str(err.value)


def test_demo_store_setting(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_settings().demo_store is None
    (tmp_path / "nightowl.toml").write_text('demo_store = "my_pkg.store:open_store"\n')
    assert load_settings().demo_store == "my_pkg.store:open_store"
