"""Run model-written Python behind an operating-system boundary (standard library only).

A `Session` is one sandboxed interpreter (`child.py`) started by `Sandbox.session`; its
variables persist between code actions, and the trusted caller answers its API calls (the
app state never enters the sandbox). Layers, outermost first:

- bubblewrap (``bwrap``), when it works here: new mount, PID, network, IPC and UTS
  namespaces; a filesystem of read-only /usr and the interpreter, a fresh /proc and /dev,
  and a size-capped tmpfs as the private working directory -- nothing else of the host.
- an unprivileged user (``nightowl-sandbox``, created at first use when root; the
  caller's own user when not root), no-new-privileges, an empty environment;
- rlimits: address space, CPU seconds, processes, open files, file size;
- its own session/process group, stopped (SIGSTOP) between actions and killed as a group
  at the time limit; a killed session is replaced by a fresh one at the next action.

Without bubblewrap it falls back to the last three layers and logs one warning saying
what is missing. The AST filter (`check_code`) is a first filter, not the wall. This module
is also loaded by file path from the AppWorld interpreter, so it imports nothing else of
nightowl.
"""

from __future__ import annotations

import ast
import contextlib
import ctypes
import functools
import json
import logging
import os
import pwd
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("nightowl.sandbox")

CHILD = Path(__file__).with_name("child.py")
SANDBOX_USER = "nightowl-sandbox"
SAFE_BUILTIN_NAMES = (
    "abs all any bool dict enumerate filter float format int isinstance len list map max min "
    "next print range repr reversed round set slice sorted str sum tuple zip True False None "
    "Exception KeyError ValueError TypeError IndexError AttributeError StopIteration"
).split()
MAX_OUTPUT = 4000
#: largest protocol line the parent accepts from the sandbox (an API call's arguments)
MAX_MESSAGE = 4 << 20
#: seconds after an action's own time limit before the parent kills the sandbox
GRACE_S = 1.0
MODES = ("auto", "bwrap", "fallback")
#: Python's PR_SET_NO_NEW_PRIVS / PR_SET_CHILD_SUBREAPER (linux/prctl.h)
_PR_SET_NO_NEW_PRIVS, _PR_SET_CHILD_SUBREAPER = 38, 36


class SandboxError(RuntimeError):
    """The sandbox could not be set up as asked."""


class Refused(Exception):
    """Code that the first filter does not pass on."""


def check_code(code: str) -> ast.Module:
    """First filter: parse agent code, refuse imports and private/dunder names.

    Raises:
        Refused: an import, a private attribute, a dunder name, global/nonlocal.
        SyntaxError: the code does not parse.
    """
    tree = ast.parse(code, mode="exec")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            raise Refused("imports are not allowed; use the `apis` object only")
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            raise Refused(f"access to private attribute {node.attr!r} is not allowed")
        if isinstance(node, ast.Name) and node.id.startswith("__"):
            raise Refused(f"access to {node.id!r} is not allowed")
        if isinstance(node, ast.Global | ast.Nonlocal):
            raise Refused("global/nonlocal are not allowed")
    return tree


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Resource limits of one sandboxed interpreter."""

    address_space_mb: int = 1024
    cpu_s: int = 120  # per session (an episode): a backstop, the wall clock is per action
    nproc: int = 64  # per user id: shared by the sandboxes running at once
    nofile: int = 64
    fsize_mb: int = 16
    workdir_mb: int = 64  # the tmpfs working directory (bubblewrap only)

    def apply(self) -> None:
        """Set these limits on the calling process (soft = hard)."""
        mb = 1 << 20
        for res, val in (
            (resource.RLIMIT_AS, self.address_space_mb * mb),
            (resource.RLIMIT_CPU, self.cpu_s),
            (resource.RLIMIT_NPROC, self.nproc),
            (resource.RLIMIT_NOFILE, self.nofile),
            (resource.RLIMIT_FSIZE, self.fsize_mb * mb),
            (resource.RLIMIT_CORE, 0),
        ):
            resource.setrlimit(res, (val, val))


@dataclass(kw_only=True)
class ActionResult:
    """What one code action produced."""

    output: str
    error: str | None
    refused: bool = False
    killed: bool = False  # the parent stopped the sandbox (time limit, crash, bad protocol)
    restarted: bool = False  # this action ran in a fresh sandbox (earlier variables lost)
    seconds: float = 0.0


@functools.cache
def _bwrap_probe() -> tuple[bool, str]:
    """Whether bubblewrap is installed and can make namespaces here, and why not (cached)."""
    exe = shutil.which("bwrap")
    if exe is None:
        return False, "bubblewrap (bwrap) is not installed"
    cmd = [exe, *_ns_flags(), *_fs_flags(Path(sys.base_prefix)), "--", "/bin/true"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)  # noqa: S603
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"bwrap failed: {exc}"
    err = r.stderr.strip().splitlines()
    return r.returncode == 0, (err[-1] if err else f"exit {r.returncode}")


def _ns_flags() -> list[str]:
    # As root: no user namespace (the child drops to the sandbox user itself); else one.
    flags = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"]
    flags += ["--unshare-cgroup-try", "--die-with-parent", "--clearenv"]
    return flags if os.geteuid() == 0 else ["--unshare-user", *flags]


def _fs_flags(prefix: Path) -> list[str]:
    out = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64"):
        p = Path(top)
        if p.is_symlink():
            out += ["--symlink", os.readlink(p), top]
        elif p.is_dir():
            out += ["--ro-bind", top, top]
    if Path("/etc/ld.so.cache").exists():
        out += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    if not str(prefix).startswith("/usr/"):
        out += ["--ro-bind", str(prefix), str(prefix)]
    return [*out, "--proc", "/proc", "--dev", "/dev"]


def _sandbox_ids() -> tuple[int, int] | None:
    """(uid, gid) of the sandbox user when root (created at first use), else None."""
    if os.geteuid() != 0:
        return None
    try:
        pw = pwd.getpwnam(SANDBOX_USER)
    except KeyError:
        useradd = shutil.which("useradd")
        cmd = [useradd or "useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent"]
        cmd += ["--shell", "/usr/sbin/nologin", SANDBOX_USER]
        try:
            subprocess.run(cmd, capture_output=True, timeout=30, check=True)  # noqa: S603
            pw = pwd.getpwnam(SANDBOX_USER)
        except (OSError, subprocess.SubprocessError, KeyError):
            log.warning("could not create user %s; using nobody", SANDBOX_USER)
            pw = pwd.getpwnam("nobody")
    return pw.pw_uid, pw.pw_gid


def _prctl() -> Callable[..., int] | None:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


class Sandbox:
    """How code actions are isolated on this machine (mode, user, limits).

    Args:
        mode: ``bwrap`` (namespaces; fails if unavailable), ``fallback`` (uid drop +
            rlimits + own session), or ``auto`` (bwrap when it works, else fallback with a
            warning). Default: ``$NIGHTOWL_SANDBOX`` or ``auto``.
        limits: resource limits per sandboxed interpreter.
        python: interpreter run inside (default: this one's real executable).
    """

    def __init__(
        self, mode: str | None = None, *, limits: Limits | None = None, python: str | None = None
    ) -> None:
        mode = mode or os.environ.get("NIGHTOWL_SANDBOX") or "auto"
        if mode not in MODES:
            raise SandboxError(f"unknown sandbox mode {mode!r}; use one of {', '.join(MODES)}")
        self.limits = limits or Limits()
        self.python = os.path.realpath(python or sys.executable)
        self.prefix = Path(os.path.realpath(sys.base_prefix))
        self.ids = _sandbox_ids()
        self.warning: str | None = None
        if mode in ("auto", "bwrap"):
            ok, why = _bwrap_probe()
            if not ok and mode == "bwrap":
                raise SandboxError(f"bubblewrap sandbox unavailable: {why}")
            mode = "bwrap" if ok else "fallback"
            if not ok:
                self.warning = f"{why}; " if why else ""
        self.mode = mode
        self._prctl = _prctl()
        if mode == "fallback":
            user = "no uid drop (not root)" if self.ids is None else "uid drop"
            self.warning = (
                f"sandbox fallback ({self.warning or ''}{user} + rlimits + own session): "
                "code actions can use the network and read world-readable files"
            )
            log.warning(self.warning)
            if self._prctl is not None:  # orphans of killed actions come back to us to be swept
                self._prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)

    @property
    def layers(self) -> tuple[str, ...]:
        """The isolation layers in force (``namespaces``, ``uid``, ``rlimits``, ``session``)."""
        out = ["namespaces"] if self.mode == "bwrap" else []
        if self.ids is not None or (self.mode == "bwrap" and os.geteuid() != 0):
            out.append("uid")
        return (*out, "rlimits", "session", "empty-env")

    def command(self, workdir: str) -> list[str]:
        """The argv that starts one sandboxed interpreter."""
        uid, gid = self.ids if self.ids is not None else (-1, -1)
        py = [self.python, "-I", "-S", "-c", CHILD.read_text(), str(uid), str(gid)]
        if self.mode == "fallback":
            return [*py, workdir]
        bw = [shutil.which("bwrap") or "bwrap", *_ns_flags(), *_fs_flags(self.prefix)]
        bw += ["--size", str(self.limits.workdir_mb << 20), "--tmpfs", "/work", "--chdir", "/work"]
        bw += ["--setenv", "PATH", "/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8"]
        return [*bw, "--", *py, "/work"]

    def _preexec(self) -> None:
        self.limits.apply()
        if self._prctl is not None:
            self._prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)

    def session(
        self,
        *,
        handler: Callable[[str, str, list[Any], dict[str, Any]], Any] | None = None,
        apps: dict[str, list[str]] | None = None,
        builtins: list[str] | None = None,
        max_output: int = MAX_OUTPUT,
    ) -> Session:
        """A sandboxed interpreter whose ``apis.<app>.<api>(...)`` calls go to ``handler``."""
        return Session(
            self,
            handler=handler,
            config={
                "apps": apps or {},
                "builtins": list(SAFE_BUILTIN_NAMES if builtins is None else builtins),
                "max_output": max_output,
            },
        )


@dataclass(kw_only=True)
class _Proc:
    popen: subprocess.Popen[bytes]
    workdir: str | None
    buf: bytearray = field(default_factory=bytearray)
    ready: bool = False
    interp: int = 0  # pid of the sandboxed interpreter (bwrap's grandchild or popen's pid)


class Session:
    """One sandboxed interpreter at a time; variables persist until it is killed or closed."""

    def __init__(
        self,
        sandbox: Sandbox,
        *,
        handler: Callable[[str, str, list[Any], dict[str, Any]], Any] | None,
        config: dict[str, Any],
    ) -> None:
        self.sandbox, self.handler, self.config = sandbox, handler, config
        self._proc: _Proc | None = None
        self.starts = 0

    # --- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        """Start the interpreter now (otherwise at the first action)."""
        if self._proc is not None and self._proc.popen.poll() is None:
            return
        self.close()
        workdir = None
        if self.sandbox.mode == "fallback":
            workdir = tempfile.mkdtemp(prefix="nightowl-sandbox-")
        popen = subprocess.Popen(  # noqa: S603 - the sandbox launcher
            self.sandbox.command(workdir or "/work"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={},
            cwd="/",
            start_new_session=True,
            preexec_fn=self.sandbox._preexec,  # noqa: PLW1509 - rlimits before exec
        )
        self._proc = _Proc(popen=popen, workdir=workdir)
        self.starts += 1
        self._send(self.config)

    def close(self) -> None:
        """Kill the interpreter and everything it started; remove its working directory."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        pid = proc.popen.pid
        tree = _descendants(pid)
        for sig in (signal.SIGKILL, signal.SIGCONT):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                pass
        if self.sandbox.ids is not None:  # those that left the group (setsid)
            for p in tree:
                if _uid_of(p) == self.sandbox.ids[0]:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p, signal.SIGKILL)
        proc.popen.wait()
        _wait_gone(tree)
        for stream in (proc.popen.stdin, proc.popen.stdout):
            if stream is not None:
                stream.close()
        if self.sandbox.mode == "fallback":
            self._sweep()
        if proc.workdir:
            shutil.rmtree(proc.workdir, ignore_errors=True)

    def _sweep(self) -> None:
        """Kill sandbox-user processes that left the group and were re-parented to us."""
        if self.sandbox.ids is None:
            return
        uid = self.sandbox.ids[0]
        for _ in range(10):
            found = False
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit():
                    continue
                try:
                    st = os.stat(entry.path)
                    stat = Path(entry.path, "stat").read_text()
                except OSError:
                    continue
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                if st.st_uid == uid and ppid == os.getpid():
                    found = True
                    pid = int(entry.name)
                    try:
                        os.kill(pid, signal.SIGKILL)
                        os.waitpid(pid, 0)
                    except (ProcessLookupError, ChildProcessError):
                        pass
            if not found:
                return
            time.sleep(0.01)

    # --- protocol -----------------------------------------------------------------------
    def _send(self, obj: dict[str, Any]) -> bool:
        assert self._proc is not None
        try:
            self._proc.popen.stdin.write(json.dumps(obj).encode() + b"\n")  # type: ignore[union-attr]
            self._proc.popen.stdin.flush()  # type: ignore[union-attr]
            return True
        except (BrokenPipeError, OSError, ValueError):
            return False

    def _recv(self, deadline: float) -> tuple[dict[str, Any] | None, str]:
        """The next message, or (None, why) on timeout, exit, oversize or garbage."""
        assert self._proc is not None
        proc = self._proc
        fd = proc.popen.stdout.fileno()  # type: ignore[union-attr]
        while b"\n" not in proc.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None, "time limit"
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                code = proc.popen.wait()
                why = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit {code}"
                return None, f"the sandboxed interpreter stopped ({why})"
            proc.buf += chunk
            if len(proc.buf) > MAX_MESSAGE:
                return None, "the sandbox sent an oversized message"
        line, _, rest = proc.buf.partition(b"\n")
        proc.buf = bytearray(rest)
        with contextlib.suppress(ValueError):
            if isinstance(msg := json.loads(line), dict):
                return msg, ""
        return None, "the sandbox broke the protocol"

    def _ensure_ready(self, deadline: float) -> str:
        restarted = self._proc is None or self._proc.popen.poll() is not None
        if restarted:
            self.start()
        assert self._proc is not None
        if not self._proc.ready:
            os.killpg(self._proc.popen.pid, signal.SIGCONT)
            msg, why = self._recv(deadline)
            if msg is None or not msg.get("ready"):
                self.close()
                raise SandboxError(f"the sandbox did not start: {why or msg}")
            ids = self.sandbox.ids
            if ids is not None and msg.get("uid") != ids[0]:
                self.close()
                raise SandboxError(f"the sandbox runs as uid {msg.get('uid')}, not {ids[0]}")
            self._proc.ready = True
            self._proc.interp = self._find_interp()
        return "restarted" if restarted and self.starts > 1 else ""

    def _find_interp(self) -> int:
        """The interpreter's pid: the first process in the tree running our python."""
        assert self._proc is not None
        pid = self._proc.popen.pid
        for p in [pid, *_descendants(pid)]:
            try:
                argv0 = Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0", 1)[0]
            except OSError:
                continue
            if argv0.decode(errors="replace") == self.sandbox.python:
                return p
        return pid

    def _reap_leftovers(self) -> int:
        """Kill processes an action started and left behind (none survives its action)."""
        assert self._proc is not None
        left = _descendants(self._proc.interp)
        for p in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, signal.SIGKILL)
        _wait_gone(left)
        return len(left)

    def run(self, code: str, timeout: float = 10.0, *, check: bool = True) -> ActionResult:
        """Run one code action; errors (and kills) come back in the result, never raised.

        Args:
            code: Python source written by a model.
            timeout: seconds of wall clock the action may take (API calls included).
            check: apply the first filter (`check_code`) before sending the code.
        """
        t0 = time.monotonic()
        if check:
            try:
                check_code(code)
            except Refused as exc:
                return ActionResult(output=f"Refused: {exc}", error=f"Refused: {exc}", refused=True)
            except SyntaxError as exc:
                err = f"SyntaxError: {exc.msg} (line {exc.lineno})"
                return ActionResult(output=err, error=err, refused=True)
        restarted = bool(self._ensure_ready(t0 + 30.0))
        assert self._proc is not None
        pid = self._proc.popen.pid
        os.killpg(pid, signal.SIGCONT)
        deadline = time.monotonic() + timeout + GRACE_S
        why = "" if self._send({"op": "exec", "code": code, "timeout": timeout}) else "closed"
        while not why:
            msg, why = self._recv(deadline)
            if msg is None:
                break
            if msg.get("done"):
                self._reap_leftovers()
                try:
                    os.killpg(pid, signal.SIGSTOP)  # nothing of it runs between actions
                except ProcessLookupError:
                    pass
                out = str(msg.get("output", ""))[: MAX_OUTPUT * 2]
                raw_err = msg.get("error")
                failed = None if raw_err is None else str(raw_err)[:MAX_OUTPUT]
                text = (out + "\n" if out else "") + failed if failed else out
                return ActionResult(
                    output=_cap(text), error=failed, restarted=restarted,
                    seconds=time.monotonic() - t0,
                )
            if "call" in msg and not self._send(self._answer(msg["call"])):
                why = "the sandbox stopped reading"
        self.close()
        if why == "time limit":
            why = f"execution exceeded the {timeout:g} s time limit"
        err = f"Execution failed: {why}; the sandbox was stopped (variables are lost)"
        return ActionResult(
            output=err, error=err, killed=True, restarted=restarted,
            seconds=time.monotonic() - t0,
        )

    def _answer(self, call: Any) -> dict[str, Any]:
        """Validate one API call from the sandbox and run it in the trusted process."""
        try:
            app, api, args, kwargs = call
            ok = isinstance(app, str) and isinstance(api, str)
            ok = ok and isinstance(args, list) and isinstance(kwargs, dict)
            if not ok or api not in self.config["apps"].get(app, ()) or self.handler is None:
                return {"err": f"no API {app}.{api}"}
            result = self.handler(app, api, args, kwargs)
            return {"ok": json.loads(json.dumps(result, default=str))}
        except Exception as exc:  # noqa: BLE001 - the app's refusal goes back as an error
            return {"err": str(exc)[:MAX_OUTPUT] or type(exc).__name__}


def _descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc/PID/task/*/children)."""
    out: list[int] = []
    todo = [pid]
    while todo and len(out) < 10_000:
        p = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                kids = [int(k) for k in Path(f"/proc/{p}/task/{t}/children").read_text().split()]
            except (OSError, ValueError):
                continue
            out += kids
            todo += kids
    return out


def _uid_of(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def _wait_gone(pids: list[int], timeout: float = 2.0) -> None:
    """Wait until these processes are dead (zombies count as dead)."""
    end = time.monotonic() + timeout
    for p in pids:
        while time.monotonic() < end:
            try:
                state = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                break
            if state in ("Z", "X"):
                break
            time.sleep(0.005)


def _cap(text: str) -> str:
    if len(text) <= MAX_OUTPUT:
        return text
    return text[:MAX_OUTPUT] + f"\n... ({len(text) - MAX_OUTPUT} more characters)"
