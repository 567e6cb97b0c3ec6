"""Escape attempts against the code-action sandbox, in both modes (bubblewrap and fallback).

Each attack runs as a code action; it must fail safely: the action gets an error (or
harmless output), a next benign action works, nothing outside the sandbox changed, and no
sandbox process outlives the session (checked by the `session` fixture). Most attacks first
recover the real ``os``/builtins through frame walking -- which works, on purpose: the AST
filter is only a first filter, the wall is the OS, and these tests are about the wall.

The fallback mode (no bubblewrap: uid drop + rlimits + own session) has no network or
filesystem isolation: the attacks that only namespaces stop are marked ``xfail(strict)``
there, so a change in what the fallback blocks shows up here and in docs/sandbox.md.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile
import time
from pathlib import Path

import pytest

from nightowl.sandbox import Sandbox, Session
from tests.security.conftest import PRIVATE, SECRET, action_leftovers

REPO = Path(__file__).resolve().parents[2]
#: passes the AST filter; gives the sandboxed interpreter's own globals and real builtins
RECOVER = """
def _g():
    yield box[0].gi_frame.f_back
box = [None]
gen = _g()
box[0] = gen
top = next(gen).f_back
G, B = top.f_globals, top.f_builtins
os = G['os']
sys = G['sys']
imp = B['__import__']
"""


def attack(s: Session, code: str, *, check: bool = True, timeout: float = 2.0) -> str:
    """Run one attack, then a benign action that must still work; the attack's text."""
    res = s.run(code, timeout=timeout, check=check)
    text = res.output
    for leak in (SECRET, *PRIVATE.values()):
        assert leak not in text, f"leaked {leak!r}: {text[:300]}"
    ok = s.run("print(apis.demo.echo(21 * 2))")
    assert ok.error is None and "42" in ok.output, ok
    return text


def world_readable(path: Path) -> bool:
    """Whether any user may read ``path``: the file readable and every folder above it
    searchable by others (what decides it for the fallback's dropped uid)."""
    if not path.stat().st_mode & stat.S_IROTH:
        return False
    return all(p.stat().st_mode & stat.S_IXOTH for p in path.resolve().parents)


def needs_namespaces(request: pytest.FixtureRequest, sandbox: Sandbox, why: str) -> None:
    """Mark the running test as a known gap of the fallback (strict: it must still fail)."""
    if "namespaces" not in sandbox.layers:
        request.applymarker(pytest.mark.xfail(strict=True, reason=f"fallback: {why}"))


# --- the first filter still refuses, and its refusals are plain errors --------------------
@pytest.mark.parametrize(
    "code",
    ["import os", "__import__('os')", "().__class__.__bases__", "apis._apps", "global x"],
)
def test_first_filter_refuses(session: Session, code: str) -> None:
    res = session.run(code)
    assert res.refused and res.error and "Refused" in res.output
    attack(session, "pass")


# --- frame, traceback, format-string, gc, sys.modules, subclass walking -------------------
def test_frame_walking_reaches_only_the_sandbox(session: Session) -> None:
    text = attack(session, RECOVER + "print(os.getuid(), sorted(os.environ), os.getcwd())")
    assert "NIGHTOWL_TEST_SECRET" not in text
    assert not text.startswith("0 ") or session.sandbox.ids is None


def test_traceback_walking_in_a_format_string(session: Session) -> None:
    code = (
        "try:\n    1/0\nexcept Exception as e:\n"
        "    print('{0.__traceback__.tb_frame.f_back.f_globals}'.format(e))"
    )
    text = attack(session, code)
    assert "CONFIG" in text  # it got the sandboxed interpreter's globals, and nothing more


def test_format_string_reads_environment(session: Session) -> None:
    text = attack(session, "print('{0.__init__.__globals__[os].environ}'.format(apis))")
    assert "environ(" in text and "NIGHTOWL_TEST_SECRET" not in text


def test_gc_walk_finds_no_trusted_object(session: Session) -> None:
    code = RECOVER + (
        "gc = sys.modules.get('gc') or imp('gc')\n"
        "hits = [o for o in gc.get_objects() if isinstance(o, str) and 'PRIVATE' in o]\n"
        "print(len(gc.get_objects()), hits)"
    )
    attack(session, code)


def test_sys_modules_walk(session: Session) -> None:
    code = RECOVER + "print(sorted(sys.modules)); print(sys.modules['os'].environ)"
    text = attack(session, code)
    assert "nightowl" not in text.replace("nightowl-sandbox", "")  # no trusted module loaded


def test_subclass_walk_to_system(session: Session, tmp_path: Path) -> None:
    marker = tmp_path / "subclass-pwned"
    code = (
        "for c in ().__class__.__base__.__subclasses__():\n"
        "    if c.__name__ == '_wrap_close':\n"
        f"        print(c.__init__.__globals__['system']('touch {marker}; id'))\n"
    )
    attack(session, code, check=False)
    assert not marker.exists()


def test_builtins_recovery_gives_no_privilege(session: Session) -> None:
    text = attack(session, RECOVER + "print(B['open']('/etc/shadow').read())")
    assert "Error" in text and "root:" not in text


# --- imports by any route, privilege ------------------------------------------------------
def test_import_without_the_filter_gives_no_privilege(session: Session) -> None:
    assert "ImportError" in attack(session, "import os", check=False)  # no __import__
    text = attack(session, RECOVER + "imp('posix').setuid(0)\nprint('root')", check=False)
    if session.sandbox.ids is not None:
        assert "PermissionError" in text


def test_setresuid_to_root(session: Session) -> None:
    text = attack(session, RECOVER + "os.setresuid(0, 0, 0)\nprint('uid', os.getuid())")
    if session.sandbox.ids is not None:
        assert "PermissionError" in text and "uid 0" not in text


def test_exec_a_shell(session: Session, tmp_path: Path) -> None:
    marker = tmp_path / "shell-pwned"
    code = RECOVER + (
        "pid = os.fork()\n"
        f"if pid == 0:\n    os.execv('/bin/sh', ['sh', '-c', 'touch {marker}; cat /etc/shadow'])\n"
        "print(os.waitpid(pid, 0))"
    )
    attack(session, code)
    assert not marker.exists()


# --- files --------------------------------------------------------------------------------
def test_read_etc_shadow(session: Session) -> None:
    text = attack(session, RECOVER + "print(B['open']('/etc/shadow').read()[:80])")
    assert "Error" in text


def test_read_a_private_file_of_the_caller(session: Session, tmp_path: Path) -> None:
    secret = tmp_path / "api-key"
    secret.write_text(SECRET)
    secret.chmod(0o600)
    text = attack(session, RECOVER + f"print(B['open']({str(secret)!r}).read())")
    assert "Error" in text


def test_read_the_reference_solution_in_the_repo(
    session: Session, sandbox: Sandbox, request: pytest.FixtureRequest
) -> None:
    pack = REPO / "nightowl" / "envs" / "appworld_tasks" / "pack.py"
    if world_readable(pack):  # a checkout under a private folder (0700) is not a gap
        needs_namespaces(request, sandbox, "world-readable files (the repository) are visible")
    text = attack(session, RECOVER + f"print(B['open']({str(pack)!r}).read()[:200])")
    assert "Error" in text


def test_read_the_parents_memory_and_environment(session: Session) -> None:
    code = RECOVER + (
        "ppid = os.getppid()\n"
        "for p in (f'/proc/{ppid}/environ', f'/proc/{ppid}/cmdline', '/proc/1/environ'):\n"
        "    try:\n        print(p, B['open'](p, 'rb').read()[:2000])\n"
        "    except Exception as e:\n        print(p, type(e).__name__)\n"
    )
    if session.sandbox.ids is None and "namespaces" not in session.sandbox.layers:
        pytest.skip("fallback without uid drop: the parent's /proc is readable (same user)")
    attack(session, code)


def test_write_outside_the_work_dir(session: Session, tmp_path: Path) -> None:
    targets = [REPO / "PWNED", Path("/etc/nightowl-pwned"), tmp_path / "pwned"]
    code = RECOVER + "".join(
        f"try:\n    B['open']({str(t)!r}, 'w').write('x')\nexcept Exception as e:\n"
        f"    print(type(e).__name__)\n"
        for t in targets
    )
    text = attack(session, code)
    assert all(not t.exists() for t in targets), text


def test_write_to_a_world_writable_dir(
    session: Session, sandbox: Sandbox, request: pytest.FixtureRequest
) -> None:
    shared = Path(tempfile.mkdtemp(prefix="nightowl-shared-", dir="/tmp"))
    try:
        shared.chmod(0o1777)
        needs_namespaces(request, sandbox, "world-writable host directories are writable")
        attack(session, RECOVER + f"B['open']({str(shared / 'x')!r}, 'w').write('x')")
        assert list(shared.iterdir()) == []
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_work_dir_is_private_and_thrown_away(session: Session) -> None:
    session.run(RECOVER + "B['open']('note.txt', 'w').write('hi'); print(os.getcwd())")
    cwd = session.run(RECOVER + "print(os.getcwd())").output.strip()
    session.close()
    assert not Path(cwd).exists() or "namespaces" in session.sandbox.layers
    text = attack(session, RECOVER + "print(B['open']('note.txt').read())")
    assert "FileNotFoundError" in text


def test_file_size_limit(session: Session) -> None:
    code = RECOVER + "B['open']('big', 'w').write('x' * (64 << 20))"
    text = attack(session, code)
    assert "Error" in text


def test_open_file_limit(session: Session) -> None:
    text = attack(session, RECOVER + "fs = [B['open']('/dev/null') for _ in range(10000)]")
    assert "Too many open files" in text


# --- network ------------------------------------------------------------------------------
def test_network_connect_to_a_local_port(
    session: Session, sandbox: Sandbox, request: pytest.FixtureRequest
) -> None:
    # bash's /dev/tcp: needs no Python module, as an attacker with a shell would do it
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.5)
    port = srv.getsockname()[1]
    code = RECOVER + (
        "pid = os.fork()\n"
        "if pid == 0:\n"
        f"    os.execv('/bin/bash', ['bash', '-c', 'echo pwn > /dev/tcp/127.0.0.1/{port}'])\n"
        "print('exit', os.waitpid(pid, 0)[1])"
    )
    try:
        needs_namespaces(request, sandbox, "the host network is reachable")
        text = attack(session, code)
        assert "exit 0" not in text
        with pytest.raises(TimeoutError):
            srv.accept()
    finally:
        srv.close()


# --- processes, memory, CPU, output ---------------------------------------------------------
def test_fork_bomb(session: Session) -> None:
    code = RECOVER + (
        "n = 0\nwhile True:\n    try:\n        os.fork()\n        n += 1\n"
        "    except Exception:\n        pass\n"
    )
    t0 = time.monotonic()
    res = session.run(code, timeout=1.0)
    assert res.error and time.monotonic() - t0 < 10
    assert action_leftovers(session) == []  # the forks did not survive their action
    attack(session, "pass")


def test_daemon_that_leaves_the_process_group_dies_with_the_session(session: Session) -> None:
    code = RECOVER + (
        "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        "        while True:\n            pass\n    os._exit(0)\nprint('daemonised')"
    )
    attack(session, code, check=False)
    # the `session` fixture checks that no sandbox process outlives close()


def test_memory_bomb(session: Session) -> None:
    text = attack(session, "x = 'a' * (8 << 30)")
    assert "MemoryError" in text
    text = attack(session, RECOVER + "x = []\nwhile True:\n    x.append(B['bytes'](10**8))")
    assert "MemoryError" in text


def test_cpu_loop_that_catches_the_timeout(session: Session) -> None:
    code = "while True:\n    try:\n        while True:\n            pass\n"
    code += "    except Exception:\n        pass"
    t0 = time.monotonic()
    res = session.run(code, timeout=1.0, check=False)
    took = time.monotonic() - t0
    assert res.killed and "time limit" in res.output and took < 4, (res, took)
    after = session.run("print('alive')")
    assert after.restarted and after.output.strip() == "alive"


def test_disarming_the_alarm(session: Session) -> None:
    code = RECOVER + "G['signal'].setitimer(G['signal'].ITIMER_REAL, 0)\nwhile True:\n    pass"
    code = code.replace("G['signal'].setitimer(G['signal'].ITIMER_REAL, 0)",
                        "imp('signal').signal(14, imp('signal').SIG_IGN)")
    res = session.run(code, timeout=1.0)
    assert res.killed
    attack(session, "pass")


def test_huge_output_is_cut(session: Session) -> None:
    text = attack(session, "print('x' * 10**7)")
    assert len(text) < 10_000 and "more characters" in text


def test_garbage_on_the_protocol_channel(session: Session) -> None:
    code = RECOVER + "G['_proto_out'].write('x' * (8 << 20))\nG['_proto_out'].flush()"
    res = session.run(code, timeout=2.0)
    assert res.killed and res.error
    attack(session, "pass")


def test_forged_api_call_to_an_unlisted_api(session: Session) -> None:
    code = RECOVER + (
        "G['_proto_out'].write(G['json'].dumps({'call': ['demo', 'private', [], {}]}) + '\\n')\n"
        "print(G['_recv']())"
    )
    text = attack(session, code)
    assert "no API demo.private" in text


def test_api_errors_and_bad_arguments_are_errors(session: Session) -> None:
    assert "401" in attack(session, "apis.demo.fail()")
    assert "JSON" in attack(session, "apis.demo.echo(x=set())")
    assert "no API" in attack(session, "apis.demo.reference_solution()")


def test_signal_every_process_it_can(session: Session, sandbox: Sandbox) -> None:
    if sandbox.ids is None and "namespaces" not in sandbox.layers:
        pytest.skip("fallback without uid drop: kill(-1) would hit the caller's processes")
    attack(session, RECOVER + "os.kill(-1, 9)")
    assert os.getpid() > 0  # this test process is still here


def test_background_thread_is_frozen_between_actions(session: Session) -> None:
    code = RECOVER + (
        "state = {'n': 0}\n"
        "def spin():\n    while True:\n        state['n'] += 1\n"
        "imp('_thread').start_new_thread(spin, ())"
    )
    session.run(code)
    first = session.run("print(state['n'])").output
    time.sleep(0.3)
    second = session.run("print(state['n'])").output
    # between two actions the sandbox is stopped: the thread ran only while actions ran
    assert int(second) - int(first) < 10**8
