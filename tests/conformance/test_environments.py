"""Every core environment adapter passes the conformance suite (tests/conformance/env_suite.py).

Adapters of optional extras (ALFWorld, AppWorld) and the multi-hop QA env run the same
`check_environment` from their own test modules.
"""

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from nightowl.envs.base import Environment
from nightowl.envs.registry import make_env
from tests.conformance.env_suite import check_environment, tw_test_cache_dir


@dataclass(frozen=True)
class EnvCase:
    name: str
    factory: Callable[[], Environment]
    task_ids: tuple[str, ...]


CASES = [
    EnvCase(
        "twx",
        lambda: make_env("twx", max_steps=40),
        ("twx/coin/test/20000", "twx/cookingworld/dev/10001", "twx/arithmetic/train/3"),
    ),
    EnvCase(
        "tw",
        lambda: make_env("tw", cache_dir=tw_test_cache_dir()),
        ("tw/coin_collector/test/20000", "tw/treasure_hunter/test/20000"),
    ),
    EnvCase(
        "sciworld",
        lambda: make_env("sciworld", max_steps=40),
        ("sciworld/lifespan-longest-lived/test/93",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_environment_conforms(case: EnvCase) -> None:
    env = case.factory()
    try:
        check_environment(env, case.task_ids)
    finally:
        env.close()
