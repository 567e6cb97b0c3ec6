"""The sandbox in each mode this machine supports, and a trusted handler holding private state."""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterator

import pytest

from nightowl.sandbox import Sandbox, SandboxError, Session

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
    s.close()
    left = sandbox_processes(sandbox)
    assert left == [], [open(f"/proc/{p}/stat").read() for p in left]


def sandbox_processes(sandbox: Sandbox) -> list[int]:
    """Live processes of the sandbox user (none may outlive a session)."""
    if sandbox.ids is None:
        return []
    out = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                st = os.stat(entry.path)
                state = open(f"{entry.path}/stat").read().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if st.st_uid == sandbox.ids[0] and state != "Z":
                out.append(int(entry.name))
    return out


def sandbox_user(sandbox: Sandbox) -> str | None:
    """The name of the user code actions run as (None: the caller's own)."""
    return None if sandbox.ids is None else pwd.getpwuid(sandbox.ids[0]).pw_name
