"""AppWorld adapter (extra `appworld`): the task pack, the sandbox, the expert, conformance."""

from __future__ import annotations

import pytest

from nightowl.envs.appworld_tasks import pack
from tests.conformance import env_suite
from tests.conformance.env_suite import GARBAGE, REPO

pytestmark = pytest.mark.appworld


@pytest.fixture(scope="module")
def env():
    from nightowl.envs.appworld import AppWorldEnv
    from nightowl.errors import MissingExtraError

    try:
        e = AppWorldEnv(cache_dir=REPO / ".nightowl/cache/appworld", action_timeout=2.0)
    except MissingExtraError as exc:
        pytest.skip(f"needs the appworld extra (make test-envs): {exc}")
    yield e
    e.close()


def _play_expert(env, task_id):
    env.reset(task_id)
    res = None
    for _ in range(len(pack.TASKS[task_id.split("/")[1]].solution) + 2):
        action = env.expert_action()
        if action is None:
            break
        res = env.step(action)
        assert not res.invalid, res.text
    return res


def test_pack_has_at_least_20_tasks_over_four_apps(env):
    ids = [t.task_id for s in ("train", "dev", "test") for t in env.tasks(s)]
    assert len(ids) == len(set(ids)) >= 20
    assert {t.app for t in pack.TASKS.values()} == set(pack.APPS)
    assert all(len(t.solution) >= 2 for t in pack.TASKS.values())


@pytest.mark.parametrize("name", sorted(pack.TASKS))
def test_reference_solution_wins(env, name):
    res = _play_expert(env, f"appworld/{name}/{pack.TASKS[name].split}/0")
    assert res is not None and res.done and res.won, res.info


def test_forbidden_and_garbage_code_is_refused_not_crashed(env):
    env.reset("appworld/venmo-pay/train/0")
    cases = {
        "import os": "Refused",
        "from subprocess import run": "Refused",
        "open('/etc/passwd').read()": "NameError",
        "__import__('os')": "Refused",
        "apis._apps": "Refused",
        "apis.venmo.login.__globals__": "Refused",
        "().__class__.__bases__": "Refused",
        "eval('1+1')": "NameError",
        "while True: pass": "time limit",
        "apis.file_system.show_directory()": "no app named",
        "apis.venmo.no_such_api()": "no API",
    }
    for code, expected in cases.items():
        res = env.step(code)
        assert expected in res.text, (code, res.text)
        assert res.invalid and not res.done
    for junk in (*GARBAGE[:4], "print('x' * 100000)"):
        res = env.step(junk)
        assert res.text.strip() and not res.won and not res.done
    assert "more characters" in res.text  # long output is cut
    # the read-only detours leave the expert able to finish (it re-derives its variables)
    while (action := env.expert_action()) is not None:
        res = env.step(action)
    assert res.won


def test_wrong_solution_fails_the_check(env):
    env.reset("appworld/venmo-pay/train/0")
    env.step(pack.login("venmo"))
    env.step(
        "apis.venmo.create_transaction(access_token=token, "
        "receiver_email='ben.carter@example.com', amount=20)"
    )
    res = env.step("apis.supervisor.complete_task()")
    assert res.done and not res.won and res.info["check"] != "ok"

    env.reset("appworld/note-count-tag/test/0")
    res = env.step("apis.supervisor.complete_task(answer=7)")
    assert res.done and not res.won


def test_expert_gives_up_after_an_off_path_write(env):
    env.reset("appworld/todo-create/train/0")
    env.step(env.expert_action())
    assert env.expert_action() is not None
    env.step("apis.todoist.create_project(access_token=token, name='Distraction')")
    assert env.expert_action() is None


def test_reset_restores_the_base_world(env):
    env.reset("appworld/note-delete/train/0")
    while (action := env.expert_action()) is not None:
        env.step(action)
    # the deletion is gone after the next reset: the same task wins again
    assert _play_expert(env, "appworld/note-delete/train/0").won


def test_snapshot_restore_replays(env):
    env.reset("appworld/spotify-playlist/train/0")
    env.step(env.expert_action())
    env.step(env.expert_action())
    snap = env.snapshot()
    nxt = env.expert_action()
    expected = env.step(nxt)
    env.restore(snap)
    got = env.step(nxt)
    assert (got.text, got.done, got.won) == (expected.text, expected.done, expected.won)


def test_conformance(env):
    task_ids = ["appworld/note-create/train/0", "appworld/venmo-approve/test/0"]
    # check_snapshot_restore compares whitespace-normalised actions (text-command
    # environments); code actions keep their newlines, so it is replaced by the test above.
    env_suite.check_catalogue(env)
    for task_id in task_ids:
        env_suite.check_reset(env, task_id)
        env_suite.check_garbage(env, task_id)
        env_suite.check_expert_wins(env, task_id, max_steps=10)
        env_suite.check_after_end(env)
    env_suite.check_unknown_task(env)


def test_issue_26_escapes_meet_the_os_boundary(env):
    """The escapes of issue 26 reach only the sandboxed interpreter, never the worker."""
    secret_solution = pack.TASKS["venmo-pay"].solution[-2]
    env.reset("appworld/venmo-pay/train/0")
    frame_walk = (
        "def g():\n    yield box[0].gi_frame.f_back\n"
        "box = [None]\ngen = g()\nbox[0] = gen\ntop = next(gen).f_back\n"
        "os = top.f_globals['os']\nprint(os.getuid(), dict(os.environ), os.listdir('/'))\n"
        "print(top.f_builtins['open']('/etc/shadow').read())"
    )
    res = env.step(frame_walk)
    assert res.invalid and not res.done and "Error" in res.text
    assert "root:" not in res.text and not res.text.startswith("0 ")
    res = env.step("print('{0.__init__.__globals__}'.format(apis))")
    assert secret_solution not in res.text and "World" not in res.text
    res = env.step("print('{0.__init__.__globals__[os].environ}'.format(apis))")
    assert "APPWORLD_ROOT" not in res.text and "HOME" not in res.text, res.text
    while (action := env.expert_action()) is not None:
        res = env.step(action)
    assert res.won
