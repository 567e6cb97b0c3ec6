"""The AppWorld worker: loads the apps once, plays one task at a time (JSON lines on stdio).

Runs in the AppWorld interpreter (stdlib + appworld only). Protocol: one JSON request
per line on stdin, one JSON reply per line on the original stdout (the apps' own prints
go to stderr). Requests: ``{"op": "reset", "task": name, "seed": n}`` (a pack task or a
scenario variant, `variants.find_task`) and ``{"op": "exec", "code": str,
"timeout": s}``. Agent code never runs in this process: each episode
gets a sandboxed interpreter (`nightowl/sandbox/runner.py`, loaded by path: bubblewrap or
the uid-drop fallback, see docs/sandbox.md) whose namespace holds only ``apis`` and safe
builtins; its ``apis.<app>.<api>(...)`` calls come back here over a pipe, are checked
against the apps' public API names and run on the app state, which stays in this process
with the reference solutions. The AST filter (imports, private names) runs first.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sqlite3
import sys
import time
import traceback
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pack  # noqa: E402
import variants  # noqa: E402


def _load_sandbox() -> Any:
    """`nightowl.sandbox.runner`, loaded by path (this interpreter has no nightowl)."""
    path = Path(__file__).resolve().parents[2] / "sandbox" / "runner.py"
    spec = importlib.util.spec_from_file_location("nightowl_sandbox_runner", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


sandbox = _load_sandbox()
MAX_OUTPUT = sandbox.MAX_OUTPUT


class AppProxy:
    """``apis.<app>``: exposes that app's public APIs and nothing else."""

    def __init__(self, app: str, real: object) -> None:
        self._app, self._real = app, real

    def __getattr__(self, api: str) -> object:
        if api not in self.__dir__():  # public names only
            raise AttributeError(f"app {self._app!r} has no API {api!r}")
        return getattr(self._real, api)

    def __dir__(self) -> list[str]:
        return [n for n in dir(self._real) if not n.startswith("_")]


class ApisProxy:
    """``apis``: the loaded apps, and nothing of the requester or AppWorld internals."""

    def __init__(self, real: object, apps: list[str]) -> None:
        self._apps = {a: AppProxy(a, getattr(real, a)) for a in apps}

    def __getattr__(self, app: str) -> AppProxy:
        if app not in self._apps:
            raise AttributeError(f"no app named {app!r}; apps: {sorted(self._apps)}")
        return self._apps[app]

    def __dir__(self) -> list[str]:
        return sorted(self._apps)


class World:
    """The loaded apps, their base snapshot and the running task."""

    def __init__(self) -> None:
        from appworld.collections.apis import ApiCollection
        from appworld.common.utils import import_models_module

        apps = list(pack.APPS)
        self.real_apis, self.requester = ApiCollection.load(
            to_db_home_path=":memory:nightowl",
            from_db_home_path=":memory:nightowl",
            date_and_time=datetime(2024, 5, 1, 12, 0, 0),
            load_apps=apps,
            raise_on_failure=True,
            add_login_shortcut=False,
            munchify_response=False,
            max_num_requests=None,
        )
        self.models = {a: import_models_module(a) for a in [*apps, "supervisor", "admin"]}
        for m in self.models.values():
            m.SQLModel.create_db()
        pack.build_world(self.models)
        self.base = self._save()
        self.apis = ApisProxy(self.real_apis, [*apps, "supervisor"])
        self.api_names = {a: dir(getattr(self.apis, a)) for a in [*apps, "supervisor"]}
        self.sandbox = sandbox.Sandbox()
        self.session: Any = None
        self.task: pack.PackTask | None = None
        self._total = 0  # sqlite total_changes at the last data check
        self._digest = 0  # app-data hash at the last data check

    def _conns(self) -> dict[str, sqlite3.Connection]:
        return {a: m.SQLModel.db.connection for a, m in self.models.items()}

    def _save(self) -> dict[str, sqlite3.Connection]:
        out = {}
        for app, conn in self._conns().items():
            copy = sqlite3.connect(":memory:", check_same_thread=False)
            conn.backup(copy)
            out[app] = copy
        return out

    def data_changed(self) -> bool:
        """Whether app data changed since the last call (cheap when nothing was written)."""
        total = sum(c.total_changes for c in self._conns().values())
        if total == self._total:
            return False
        self._total = total
        digest = self.digest()
        changed, self._digest = digest != self._digest, digest
        return changed

    def digest(self) -> int:
        """A hash of the apps' data, leaving out the user tables (login bookkeeping)."""
        h = 0
        for app, conn in sorted(self._conns().items()):
            tables = conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
            for (table,) in tables.fetchall():
                if table == "user" or "_fts" in table:
                    continue
                rows = conn.execute(f'SELECT * FROM "{table}"').fetchall()  # noqa: S608
                h = hash((h, app, table, repr(rows)))
        return h

    def reset(self, name: str, seed: int = 0) -> dict:
        """Restore the base world, set the task up, create the supervisor task."""
        task = variants.find_task(name, seed)
        if task is None:
            raise KeyError(f"no task {name!r} with seed {seed}")
        self.task = task
        t0 = time.perf_counter()
        for app, conn in self._conns().items():
            self.base[app].backup(conn)
        self.requester.reset_requests()
        self.task.setup(self.models)
        sup = self.models["supervisor"]
        sup.Task.create_save(
            supervisor_id=sup.Supervisor.all()[0].id, instruction=self.task.instruction
        )
        if self.session is not None:
            self.session.close()  # nothing of the previous episode survives
        self.session = self.sandbox.session(handler=self.call_api, apps=self.api_names)
        self.session.start()
        self._total = sum(c.total_changes for c in self._conns().values())
        self._digest = self.digest()
        return {
            "instruction": self.task.instruction,
            "reset_s": time.perf_counter() - t0,
            "supervisor": pack.SUPERVISOR,
        }

    def call_api(self, app: str, api: str, args: list, kwargs: dict) -> object:
        """An API call from the sandbox (names already checked against `api_names`)."""
        return getattr(getattr(self.apis, app), api)(*args, **kwargs)

    def exec(self, code: str, timeout: float) -> dict:
        """Run agent code in the sandbox; report output, errors and task status."""
        if self.session is None:
            raise RuntimeError("exec before reset")
        res = self.session.run(code, timeout)
        completed, won, reason, answer = self.status()
        return {
            "output": res.output or "Execution successful.",
            "error": res.error,
            "refused": res.refused,
            "sandbox_s": res.seconds,
            "changed": self.data_changed(),
            "completed": completed,
            "won": won,
            "reason": reason,
            "answer": answer,
        }

    def status(self) -> tuple[bool, bool, str, object]:
        """(completed, won, check reason, answer) of the running task."""
        sup = self.models["supervisor"]
        tasks = sup.Task.all()
        if not tasks or self.task is None or tasks[0].status is None:
            return False, False, "", None
        try:
            answer = json.loads(tasks[0].answer)
        except (TypeError, ValueError):
            answer = tasks[0].answer
        won, reason = self.task.check(self.models, answer)
        return True, bool(won), reason, answer


class OfficialWorld:
    """AppWorld's own tasks (``AppWorld(task_id)``, its code runner and its evaluation).

    Used only when the official task data is installed under ``$APPWORLD_ROOT/data``;
    runs in its own worker process, since AppWorld re-points the apps' databases.
    """

    def __init__(self) -> None:
        self.world: Any = None

    def reset(self, name: str, seed: int = 0) -> dict:
        """Start AppWorld's task ``name`` (closing the previous one; ``seed`` is unused)."""
        from appworld import AppWorld

        if self.world is not None:
            self.world.close()
        self.world = AppWorld(task_id=name, experiment_name="nightowl")
        return {
            "instruction": self.world.task.instruction,
            "supervisor": dict(self.world.task.supervisor),
        }

    def exec(self, code: str, timeout: float) -> dict:
        """Run code with AppWorld's own runner; evaluate once the task is completed."""
        assert self.world is not None

        def on_alarm(*_: object) -> None:
            raise TimeoutError(f"execution exceeded the {timeout:g} s time limit")

        signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout)
        error = None
        try:
            output = self.world.execute(code)
        except TimeoutError as exc:
            output, error = str(exc), str(exc)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        if error is None and ("Traceback" in output or "Execution failed" in output):
            error = output.strip().splitlines()[-1]
        completed = bool(self.world.task_completed())
        won = bool(self.world.evaluate().success) if completed else False
        return {
            "output": output[:MAX_OUTPUT],
            "error": error,
            "refused": False,
            "changed": True,
            "completed": completed,
            "won": won,
            "reason": "appworld evaluation",
            "answer": None,
        }


def main() -> None:
    """Serve requests until stdin closes."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything the apps print goes to stderr, not into the protocol
    sys.stdout = sys.stderr
    t0 = time.perf_counter()
    world: World | OfficialWorld = OfficialWorld() if "--official" in sys.argv else World()
    ready = {"ready": True, "load_s": time.perf_counter() - t0}
    if isinstance(world, World):
        ready.update(sandbox=world.sandbox.mode, sandbox_warning=world.sandbox.warning)
    proto.write(json.dumps(ready) + "\n")
    for line in sys.stdin:
        try:
            req = json.loads(line)
            op = req.get("op")
            if op == "reset":
                reply = world.reset(req["task"], int(req.get("seed", 0)))
            elif op == "exec":
                reply = world.exec(str(req["code"]), float(req.get("timeout", 10.0)))
            else:
                reply = {"fatal": f"unknown op {op!r}"}
        except Exception as exc:  # noqa: BLE001 - report, keep serving
            reply = {
                "fatal": f"{type(exc).__name__}: {exc}",
                "trace": traceback.format_exc()[-2000:],
            }
        proto.write(json.dumps(reply, default=str) + "\n")


if __name__ == "__main__":
    main()
