"""AppWorld scenario variants: the catalogue (default run) and, with the extra, the play.

The catalogue tests need no AppWorld: `AppWorldEnv` starts its worker only on the first
reset, so it is built here with the current interpreter standing in for the extra's.
The tests marked ``appworld`` play every variant's reference solution in one worker.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from nightowl.envs.appworld_tasks import pack, variants
from nightowl.envs.base import SPLITS
from nightowl.errors import UnknownNameError
from tests.conformance.env_suite import REPO

TASKS_DIR = Path(variants.__file__).parent
CATALOGUE = variants.catalogue()


def _ids(name: str) -> list[str]:
    return [f"appworld/{name}/{t.split}/{i}" for i, t in enumerate(CATALOGUE[name])]


@pytest.fixture(scope="module")
def offline_env(tmp_path_factory):
    from nightowl.envs.appworld import AppWorldEnv

    env = AppWorldEnv(cache_dir=tmp_path_factory.mktemp("aw"), python=sys.executable)
    yield env
    env.close()


def test_at_least_12_scenarios_of_6_variants_over_the_four_apps():
    assert len(CATALOGUE) >= 12
    assert all(len(vs) >= 6 for vs in CATALOGUE.values())
    assert {vs[0].app for vs in CATALOGUE.values()} == set(pack.APPS)
    for name, vs in CATALOGUE.items():
        assert name.startswith("v-") and name not in pack.TASKS
        assert {t.name for t in vs} == {name} and len({t.app for t in vs}) == 1


def test_split_rule():
    assert [variants.split_of(i) for i in range(6)] == ["train"] * 3 + ["dev"] + ["test"] * 2
    with pytest.raises(ValueError):
        variants.split_of(6)
    for vs in CATALOGUE.values():
        assert [t.split for t in vs] == list(variants.VARIANT_SPLITS)


def test_instructions_and_solutions():
    texts = [t.instruction for vs in CATALOGUE.values() for t in vs]
    assert len(texts) == len(set(texts))
    assert not set(texts) & {t.instruction for t in pack.TASKS.values()}
    for vs in CATALOGUE.values():
        for t in vs:
            assert t.solution[0] == pack.login(t.app)
            assert t.solution[-1].startswith("apis.supervisor.complete_task(")
            assert len(t.solution) >= 3
        # same API flow: the variants call the same APIs, in the same order
        flows = {tuple(_apis(t.solution)) for t in vs}
        assert len(flows) == 1, flows
        # ... with other values
        assert len({t.solution for t in vs}) == len(vs)


def _apis(solution: tuple[str, ...]) -> list[str]:
    out = []
    for step in solution:
        for node in ast.walk(ast.parse(step)):
            f = node.func if isinstance(node, ast.Call) else None
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Attribute):
                if isinstance(f.value.value, ast.Name) and f.value.value.id == "apis":
                    out.append(f"{f.value.attr}.{f.attr}")
    return out


def test_find_task():
    assert variants.find_task("venmo-pay", 0) is pack.TASKS["venmo-pay"]
    assert variants.find_task("venmo-pay", 1) is None
    assert variants.find_task("v-venmo-pay", 4) is CATALOGUE["v-venmo-pay"][4]
    assert variants.find_task("v-venmo-pay", 6) is None
    assert variants.find_task("v-venmo-pay", -1) is None
    assert variants.find_task("v-no-such", 0) is None


def test_task_ids_round_trip_through_spec(offline_env):
    listed = {t.task_id: t for s in SPLITS for t in offline_env.tasks(s)}
    for name in CATALOGUE:
        for i, task_id in enumerate(_ids(name)):
            spec = offline_env.spec(task_id)
            assert (spec.task_id, spec.game, spec.seed) == (task_id, name, i)
            assert spec.split == variants.split_of(i) and task_id in listed
    n = len(CATALOGUE)
    for split, per in (("train", 3), ("dev", 1), ("test", 2)):
        got = [t for t in offline_env.tasks(split) if t.game.startswith("v-")]
        assert len(got) == per * n
    assert offline_env.spec("appworld/venmo-pay/train/0").seed == 0  # the pack is still there
    for bad in (
        "appworld/v-venmo-pay/test/3",  # variant 3 is dev
        "appworld/v-venmo-pay/test/6",
        "appworld/v-venmo-pay/train/-1",
        "appworld/venmo-pay/train/1",
    ):
        with pytest.raises(UnknownNameError):
            offline_env.spec(bad)


def test_modules_run_with_the_standard_library_only():
    """Like the worker: this folder on sys.path, no site-packages (python -S)."""
    code = (
        f"import sys; sys.path.insert(0, {str(TASKS_DIR)!r}); import pack, variants\n"
        "c = variants.catalogue(); print(len(c), sum(map(len, c.values())))\n"
        "assert variants.find_task('v-spotify-like', 5).split == 'test'\n"
        "assert not [m for m in sys.modules if m.startswith(('nightowl', 'pydantic'))]"
    )
    res = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd="/", check=False
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [str(len(CATALOGUE)), str(sum(map(len, CATALOGUE.values())))]


# --- with the appworld extra ----------------------------------------------------------------
@pytest.fixture(scope="module")
def env():
    from nightowl.envs.appworld import AppWorldEnv
    from nightowl.errors import MissingExtraError

    try:
        e = AppWorldEnv(cache_dir=REPO / ".nightowl/cache/appworld", action_timeout=5.0)
    except MissingExtraError as exc:
        pytest.skip(f"needs the appworld extra (make test-envs): {exc}")
    yield e
    e.close()


def _play(env, task_id, actions):
    env.reset(task_id)
    res = None
    for action in actions:
        res = env.step(action)
        if res.done:
            break
    return res


@pytest.mark.appworld
@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_reference_solutions_win_every_variant(env, name):
    for task_id in _ids(name):
        env.reset(task_id)
        res = None
        while (action := env.expert_action()) is not None:
            res = env.step(action)
            assert not res.invalid, (task_id, action, res.text)
        assert res is not None and res.done and res.won, (task_id, res.info)


@pytest.mark.appworld
@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_variant_0_solution_fails_variant_4(env, name):
    task_id = _ids(name)[4]
    res = _play(env, task_id, CATALOGUE[name][0].solution)
    assert res is not None and res.done and not res.won, (task_id, res.info)
    # the check said no (the task was completed), not a dead worker or the step limit
    assert res.info.get("check") not in (None, "ok"), res.info
