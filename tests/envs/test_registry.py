import pytest

from nightowl.envs.registry import env_for_task, env_names, make_env, parse_task_id
from nightowl.errors import UnknownNameError


def test_names_cover_all_adapters():
    assert env_names() == ["twx", "tw", "sciworld", "alfworld", "appworld", "multihop"]


def test_parse_task_id():
    assert parse_task_id("twx/coin/test/20003") == ("twx", "coin", "test", 20003)


@pytest.mark.parametrize(
    "bad", ["", "twx", "twx/coin/test", "nope/coin/test/1", "twx/coin/holdout/1", "twx/coin/test/x"]
)
def test_parse_task_id_rejects(bad):
    with pytest.raises(UnknownNameError):
        parse_task_id(bad)


def test_unknown_env_lists_known():
    with pytest.raises(UnknownNameError) as err:
        make_env("nope")
    assert "twx" in str(err.value) and "sciworld" in str(err.value)
    with pytest.raises(UnknownNameError):
        env_for_task("nope/x/test/1")
