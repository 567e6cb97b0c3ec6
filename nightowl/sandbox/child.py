"""The sandboxed interpreter: runs code actions, sends API calls back to the trusted parent.

This file is not imported: `nightowl.sandbox.runner` passes its text to ``python -I -S -c``
inside the sandbox (the repository is not visible there). argv: ``UID GID WORKDIR``
(UID -1: keep the current user). Standard library only, loaded before privileges drop.

Protocol, one JSON object per line: the parent writes to our stdin, we write to our
original stdout. First line in: the config (``builtins``, ``apps``, ``max_output``); we
answer ``{"ready": true, "uid": ...}``. Then per action ``{"op": "exec", "code", "timeout"}``;
while it runs, each ``apis.<app>.<api>(...)`` sends ``{"call": [app, api, args, kwargs]}``
and waits for ``{"ok": result}`` or ``{"err": message}``; at the end we send
``{"done": true, "output", "error"}``. Nothing here is trusted by the parent.
"""

import builtins
import io
import json
import os
import signal
import sys
import traceback

UID, GID, WORKDIR = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

# --- drop privileges before reading anything untrusted --------------------------------------
if UID >= 0:
    os.chown(WORKDIR, UID, GID)
    os.chmod(WORKDIR, 0o700)
    os.setgroups([])
    os.setgid(GID)
    os.setuid(UID)
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:  # pragma: no cover - the drop did not hold
        sys.exit(97)
os.chdir(WORKDIR)
os.umask(0o077)

_proto_in = os.fdopen(0, "r", buffering=1)
_proto_out = os.fdopen(os.dup(1), "w", buffering=1)
_null = os.open(os.devnull, os.O_WRONLY)
os.dup2(_null, 1)
os.dup2(_null, 2)
os.close(_null)
sys.stdout = sys.stderr = io.StringIO()


def _send(obj):
    _proto_out.write(json.dumps(obj) + "\n")


def _recv():
    line = _proto_in.readline()
    if not line:
        os._exit(0)
    return json.loads(line)


CONFIG = _recv()
MAX_OUTPUT = int(CONFIG.get("max_output", 4000))


class _Capped(io.TextIOBase):
    """stdout of an action: keeps the first MAX_OUTPUT characters, counts the rest."""

    def __init__(self):
        self.parts, self.kept, self.dropped = [], 0, 0

    def write(self, s):
        s = str(s)
        room = MAX_OUTPUT - self.kept
        if room > 0:
            self.parts.append(s[:room])
            self.kept += min(room, len(s))
        self.dropped += max(0, len(s) - max(room, 0))
        return len(s)

    def text(self):
        return "".join(self.parts)


class ApiError(Exception):
    """An API call that the app (or the parent's checks) refused."""


def _call(app, api, args, kwargs):
    try:
        msg = json.dumps({"call": [app, api, list(args), dict(kwargs)]})
    except (TypeError, ValueError) as exc:
        raise TypeError(f"API arguments must be JSON values: {exc}") from None
    _proto_out.write(msg + "\n")
    reply = _recv()
    if "err" in reply:
        raise ApiError(str(reply["err"]))
    return reply.get("ok")


class _Api:
    __slots__ = ("_a", "_n")

    def __init__(self, app, name):
        self._a, self._n = app, name

    def __call__(self, *args, **kwargs):
        return _call(self._a, self._n, args, kwargs)

    def __repr__(self):
        return f"<api {self._a}.{self._n}>"


class _App:
    __slots__ = ("_a", "_names")

    def __init__(self, app, names):
        self._a, self._names = app, tuple(names)

    def __getattr__(self, api):
        if api not in self._names:
            raise AttributeError(f"app {self._a!r} has no API {api!r}")
        return _Api(self._a, api)

    def __dir__(self):
        return list(self._names)


class _Apis:
    __slots__ = ("_apps",)

    def __init__(self, apps):
        self._apps = {a: _App(a, n) for a, n in apps.items()}

    def __getattr__(self, app):
        if app not in self._apps:
            raise AttributeError(f"no app named {app!r}; apps: {sorted(self._apps)}")
        return self._apps[app]

    def __dir__(self):
        return sorted(self._apps)


_SAFE = {n: getattr(builtins, n) for n in CONFIG.get("builtins", ()) if hasattr(builtins, n)}
_NS: dict[str, object] = {"__builtins__": _SAFE}
if CONFIG.get("apps"):
    _NS["apis"] = _Apis(CONFIG["apps"])


def _on_alarm(*_):
    raise TimeoutError(f"execution exceeded the {_timeout:g} s time limit")


_timeout = 0.0
signal.signal(signal.SIGALRM, _on_alarm)
_send({"ready": True, "uid": os.getuid(), "gid": os.getgid()})

while True:
    req = _recv()
    if req.get("op") != "exec":
        continue
    out, error = _Capped(), None
    _timeout = float(req.get("timeout", 10.0))
    try:
        code = compile(str(req["code"]), "<agent>", "exec")
        sys.stdout = out
        signal.setitimer(signal.ITIMER_REAL, _timeout)
        try:
            exec(code, _NS)  # noqa: S102 - this process is the sandbox
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            sys.stdout = sys.stderr
    except SyntaxError as exc:
        error = f"SyntaxError: {exc.msg} (line {exc.lineno})"
    except BaseException as exc:  # noqa: BLE001 - agent code may raise anything
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            error = f"{type(exc).__name__} is not allowed"
        else:
            error = "Execution failed: " + "".join(
                traceback.format_exception_only(type(exc), exc)
            ).strip()
    text = out.text()
    if out.dropped:
        text += f"\n... ({out.dropped} more characters)"
    _send({"done": True, "output": text, "error": error})
