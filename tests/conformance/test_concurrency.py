"""Each core environment family plays 8 episodes at concurrency 4 exactly as at 1.

(ALFWorld's check is in tests/envs/test_alfworld.py: it needs the extra.)
"""

from __future__ import annotations

from tests.conformance.concurrency import check_concurrent_matches_serial
from tests.conformance.env_suite import tw_test_cache_dir


async def test_twx_concurrency_4_matches_1(tmp_path):
    tasks = [f"twx/coin/test/{20000 + i}" for i in range(4)]
    tasks += [f"twx/peckingorder/test/{20000 + i}" for i in range(4)]
    # coin's gold path is a random walk from the JVM's one RNG: its moves vary with the
    # order of engine calls (serial runs too); wins and errors must not
    out = await check_concurrent_matches_serial(
        tmp_path, "twx", tasks, max_steps=30, random_expert=tasks[:4]
    )
    assert all(won for won, *_ in out.values())


async def test_tw_concurrency_4_matches_1(tmp_path):
    tasks = [f"tw/coin_collector/train/{i}" for i in range(8)]
    out = await check_concurrent_matches_serial(
        tmp_path, "tw", tasks, max_steps=30, env_kwargs={"cache_dir": tw_test_cache_dir()}
    )
    assert all(won for won, *_ in out.values())
