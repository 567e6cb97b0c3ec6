"""The sandbox in each mode this machine supports, and a trusted handler holding private state."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nightowl.sandbox import Sandbox, SandboxError, Session
from nightowl.sandbox.runner import _descendants

SECRET = "nightowl-test-secret-7f3a9c"
#: held only by the trusted side (like AppWorld's app tables and reference solutions)
PRIVATE = {"reference_solution": "REFERENCE-SOLUTION-b41d", "table": "PRIVATE-TABLE-e09c"}


def handler(app: str, api: str, args: list, kwargs: dict) -> object:
    """A stand-in for the AppWorld worker: echoes, and never returns PRIVATE."""
    if api == "echo":
        return {"args": args, "kwargs": kwargs}
    if api == "fail":
        raise ValueError("Response status code is 401: not logged in")
    raise AssertionError(f"unvalidated call reached the handler: {app}.{api}")


@pytest.fixture(params=["bwrap", "fallback"], scope="module")
def sandbox(request: pytest.FixtureRequest) -> Sandbox:
    """A configured sandbox; bwrap is skipped (with why) where it cannot run."""
    try:
        return Sandbox(request.param)
    except SandboxError as exc:
        pytest.skip(str(exc))


@pytest.fixture
def session(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[Session]:
    """A fresh session per test, started with SECRET in the parent's environment."""
    monkeypatch.setenv("NIGHTOWL_TEST_SECRET", SECRET)
    s = sandbox.session(handler=handler, apps={"demo": ["echo", "fail"]})
    s.start()
    yield s
    tree = session_processes(s)
    s.close()
    left = [p for p in tree if alive(p)]
    assert left == [], [open(f"/proc/{p}/stat").read() for p in left]


def session_processes(s: Session) -> list[int]:
    """The live processes of a session: its launcher and every descendant."""
    proc = s._proc
    return [] if proc is None else [proc.popen.pid, *_descendants(proc.popen.pid)]


def action_leftovers(s: Session) -> list[int]:
    """Processes below the sandboxed interpreter (none may survive an action)."""
    return [] if s._proc is None else [p for p in _descendants(s._proc.interp) if alive(p)]


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
