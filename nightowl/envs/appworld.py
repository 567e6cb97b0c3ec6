"""AppWorld (extra ``appworld``): AppWorld's real apps and APIs, driven by Python code actions.

AppWorld pins pydantic<2, SQLAlchemy<2, fastapi<0.111 and more, which would break
nightowl's core, so it lives in its own virtual environment (``scripts/install-extras.sh``
puts it at ``<venv>/extras/appworld``) and runs in a worker process
(`nightowl.envs.appworld_tasks.worker`). The worker loads the apps once (in-memory
SQLite, ~20-60 s), keeps a snapshot of the base world and restores it per task
(milliseconds). Agent code does not run in the worker: each episode gets a sandboxed
interpreter (`nightowl.sandbox`: bubblewrap namespaces, an unprivileged user, rlimits, a
time limit that kills its process group) whose ``apis`` calls the worker checks and runs.

Tasks come from nightowl's pack (`nightowl.envs.appworld_tasks.pack`, 21 tasks over
simple_note, todoist, venmo and spotify): ``appworld/<task>/<split>/0``, and from its
scenario variants (`nightowl.envs.appworld_tasks.variants`, 18 scenarios x 6 variants
with the same API flow and other entities and values; variants 0-2 train, 3 dev, 4-5
test): ``appworld/<scenario>/<split>/<variant>``, e.g. ``appworld/v-venmo-pay/test/4``.
`variants.find_task(game, seed)` finds either kind, here and in the worker. When AppWorld's
official data is installed (``appworld download data`` into ``<cache_dir>/root``), its
tasks are listed too, as ``appworld/official/<split>/<n>`` (train, dev, test_normal);
they run through ``AppWorld(task_id)``, its code runner and its evaluation (in a second
worker, since AppWorld re-points the apps' databases), with no expert. An action is
a Python code string; the observation is what it printed (or its error). The episode
ends when the code calls ``apis.supervisor.complete_task(...)`` (then the pack's check
decides ``won``) or at ``max_steps``.

The expert replays the task's reference solution. It answers from the current
progress: after the agent runs the expert's step verbatim it moves on; after an agent
action that changed no app data (reads, prints, logins) it re-runs its earlier
read-only steps (to restore variables the agent may have overwritten) together with
its next step; after an agent action that changed app data, or when one of its own
steps failed, it answers None ("no expert from this state"): re-running a write such
as a payment is not safe. Snapshots are action lists restored by reset + replay (the
worker freezes the clock, so replays are exact).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from nightowl.envs.appworld_tasks import pack, variants
from nightowl.envs.base import (
    SPLITS,
    Environment,
    Observation,
    Snapshot,
    Split,
    StepResult,
    TaskSpec,
)
from nightowl.envs.common import cache_dir_for
from nightowl.envs.task_ids import parse_task_id, task_spec
from nightowl.errors import EnvError, MissingExtraError, UnknownNameError

logger = logging.getLogger(__name__)
WORKER = Path(__file__).with_name("appworld_tasks") / "worker.py"
LOAD_TIMEOUT_S = 600.0
#: nightowl split -> AppWorld dataset, for the official tasks
OFFICIAL_DATASETS = {"train": "train", "dev": "dev", "test": "test_normal"}
#: seconds the worker may take beyond an action's own time limit before it is killed
GRACE_S = 20.0


def find_python(python: str | Path | None = None) -> Path:
    """The interpreter that has appworld: argument, $NIGHTOWL_APPWORLD_PYTHON, the venv's extra.

    Raises:
        MissingExtraError: none of them exists.
    """
    candidates = [
        python,
        os.environ.get("NIGHTOWL_APPWORLD_PYTHON"),
        Path(sys.prefix) / "extras" / "appworld" / "bin" / "python",
    ]
    for cand in candidates:
        if cand and Path(cand).is_file():
            return Path(cand)
    if importlib.util.find_spec("appworld") is not None:
        return Path(sys.executable)
    err = MissingExtraError("AppWorld", "appworld", "appworld")
    # Not "pip install nightowl[appworld]": in the main venv it downgrades pydantic/SQLAlchemy.
    err.args = (
        "AppWorld needs its own virtual environment (appworld pins pydantic<2): run "
        "`make test-envs` or `bash scripts/install-extras.sh .venv/bin`, or set "
        "NIGHTOWL_APPWORLD_PYTHON",
    )
    raise err


def appworld_env_vars(cache_dir: Path) -> dict[str, str]:
    """APPWORLD_ROOT / APPWORLD_CACHE under the project cache, not the home directory."""
    root = cache_dir.resolve()
    return {"APPWORLD_ROOT": str(root / "root"), "APPWORLD_CACHE": str(root / "cache")}


class Worker:
    """One AppWorld worker process (JSON lines over pipes)."""

    def __init__(self, python: Path, cache_dir: Path, *, official: bool = False) -> None:
        env = {**os.environ, **appworld_env_vars(cache_dir), "PYTHONUNBUFFERED": "1"}
        for path in appworld_env_vars(cache_dir).values():
            Path(path).mkdir(parents=True, exist_ok=True)
        self.stderr_path = cache_dir / ("worker-official.log" if official else "worker.log")
        t0 = time.perf_counter()
        with open(self.stderr_path, "wb") as log:
            self.proc = subprocess.Popen(  # noqa: S603 - our own worker script
                [str(python), str(WORKER), *(["--official"] if official else [])],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=env,
                cwd=str(cache_dir),
            )
        self.ready = self._read(LOAD_TIMEOUT_S)
        self.load_seconds = time.perf_counter() - t0
        if self.ready and self.ready.get("sandbox_warning"):
            logger.warning("appworld: %s", self.ready["sandbox_warning"])
        if not self.ready or not self.ready.get("ready"):
            tail = self.stderr_path.read_text(errors="replace")[-1500:]
            self.kill()
            raise EnvError(f"appworld worker did not start: {tail}")

    def _read(self, timeout: float) -> dict[str, Any] | None:
        box: list[str] = []
        stdout: IO[str] = self.proc.stdout  # type: ignore[assignment]
        reader = threading.Thread(target=lambda: box.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if not box or not box[0]:
            return None
        return json.loads(box[0])  # type: ignore[no-any-return]

    def call(self, wait: float, **request: Any) -> dict[str, Any] | None:
        """Send one request; None if the worker died or overran ``wait`` s (then it is killed)."""
        if self.proc.poll() is not None:
            return None
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
        except (BrokenPipeError, OSError):
            return None
        reply = self._read(wait)
        if reply is None:
            self.kill()
        return reply

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.proc.poll() is None

    def kill(self) -> None:
        """Stop the worker process."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@dataclass(kw_only=True)
class _Episode:
    spec: TaskSpec
    task: pack.PackTask | None  # None: an official AppWorld task (no expert)
    actions: list[str] = field(default_factory=list)
    done: bool = False
    won: bool = False
    cursor: int = 0  # reference steps run verbatim
    pure: list[bool] = field(default_factory=list)  # whether each of them left app data unchanged
    deviated: bool = False  # the agent ran read-only code since the expert's last step
    off_path: bool = False


class AppWorldEnv(Environment):
    """AppWorld apps with nightowl's task pack; actions are Python code."""

    name = "appworld"
    has_expert = True
    action_format = "code"

    def __init__(
        self,
        *,
        cache_dir: Path | None = None,
        max_steps: int = 30,
        action_timeout: float = 10.0,
        python: str | Path | None = None,
    ) -> None:
        self.cache_dir = cache_dir_for("appworld", cache_dir)  # APPWORLD_ROOT, APPWORLD_CACHE
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.python = find_python(python)
        self.max_steps = int(max_steps)
        self.action_timeout = float(action_timeout)
        self._worker: Worker | None = None
        self._official_worker: Worker | None = None
        self._episode: _Episode | None = None
        self.load_seconds = 0.0

    # --- catalogue ----------------------------------------------------------------------
    def tasks(self, split: Split) -> list[TaskSpec]:
        """The pack's tasks of ``split`` (seed 0), then the scenario variants of ``split``."""
        if split not in SPLITS:
            raise UnknownNameError("split", str(split), list(SPLITS))
        out = [self._spec(t, split, 0) for t in pack.TASKS.values() if t.split == split]
        for scenario in variants.catalogue().values():
            out += [self._spec(t, split, i) for i, t in enumerate(scenario) if t.split == split]
        return out + [self._official_spec(split, n) for n in range(len(self.official_ids(split)))]

    def official_ids(self, split: str) -> list[str]:
        """AppWorld's own task ids of a split, when its data is installed (else empty)."""
        path = Path(appworld_env_vars(self.cache_dir)["APPWORLD_ROOT"]) / "data" / "datasets"
        path = path / f"{OFFICIAL_DATASETS[split]}.txt"
        if not path.is_file():
            return []
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]

    def _official_spec(self, split: Split, n: int) -> TaskSpec:
        params = {"appworld_task_id": self.official_ids(split)[n]}
        return task_spec(self.name, "official", split, n, params)

    def _spec(self, task: pack.PackTask, split: Split, seed: int) -> TaskSpec:
        params = {"app": task.app, "reference_steps": len(task.solution)}
        return task_spec(self.name, task.name, split, seed, params)

    def spec(self, task_id: str) -> TaskSpec:
        """Validate a task id against the pack and its scenario variants."""
        env, game, split, seed = parse_task_id(task_id)
        if env != self.name:
            raise UnknownNameError(f"task for environment {self.name!r}", task_id, [self.name])
        if game == "official" and 0 <= seed < len(self.official_ids(split)):
            return self._official_spec(split, seed)
        task = variants.find_task(game, seed)
        if task is None or task.split != split:
            known = [t.task_id for s in SPLITS for t in self.tasks(s)]
            raise UnknownNameError("appworld task", task_id, known)
        return self._spec(task, split, seed)

    # --- protocol -----------------------------------------------------------------------
    def worker(self) -> Worker:
        """The running worker (started, ~20-60 s, on first use or after a kill)."""
        if self._worker is None or not self._worker.alive():
            self._worker = Worker(self.python, self.cache_dir)
            self.load_seconds = self._worker.load_seconds
        return self._worker

    def reset(self, task_id: str) -> Observation:
        """Restore the base world, set the task up and return its instruction."""
        spec = self.spec(task_id)
        task = variants.find_task(spec.game, spec.seed) if spec.game != "official" else None
        self._episode = None
        name = task.name if task is not None else spec.params["appworld_task_id"]
        seed = spec.seed if task is not None else 0
        reply = self._worker_for(task).call(300.0, op="reset", task=name, seed=seed)
        if reply is None or "fatal" in reply:
            raise EnvError(f"appworld: reset of {task_id} failed: {reply}")
        self._episode = _Episode(spec=spec, task=task)
        sup = reply.get("supervisor") or pack.SUPERVISOR
        instruction = reply["instruction"]
        text = (
            f"You work for {sup.get('first_name', '')} {sup.get('last_name', '')} "
            f"({sup.get('email', '')}).\n"
            f"Task: {instruction}\n"
            "Act by writing Python code that calls the app APIs as `apis.<app>.<api>(...)` "
            f"(apps: {', '.join(pack.APPS) if task else 'see apis.api_docs'}, supervisor). "
            "Log in with "
            "`apis.<app>.login(username=email, password=...)`; the passwords are in "
            "`apis.supervisor.show_account_passwords()`. Variables persist between actions. "
            "When done, call `apis.supervisor.complete_task()` (with `answer=...` for questions)."
        )
        return Observation(
            task_id=spec.task_id,
            goal=instruction,
            text=text,
            info={"app": task.app if task else None, "game": spec.game, "split": spec.split},
        )

    def _worker_for(self, task: pack.PackTask | None) -> Worker:
        if task is not None:
            return self.worker()
        if self._official_worker is None or not self._official_worker.alive():
            self._official_worker = Worker(self.python, self.cache_dir, official=True)
        return self._official_worker

    def step(self, action: str) -> StepResult:
        """Run one code action in the sandbox; errors come back as feedback."""
        ep = self._episode
        if ep is None:
            raise EnvError("appworld: call reset(task_id) before step()")
        code = action if isinstance(action, str) else str(action)
        if ep.done:
            return StepResult(
                text="The episode is over; call reset() to start a task.",
                score=float(ep.won),
                done=True,
                won=ep.won,
                invalid=True,
                info={"after_end": True},
            )
        expected = self.expert_action()
        ep.actions.append(code)
        info: dict[str, Any] = {"steps": len(ep.actions)}
        if not code.strip():
            reply: dict[str, Any] | None = {
                "output": "Please write some Python code.",
                "error": "empty",
                "changed": False,
                "completed": False,
                "won": False,
            }
        else:
            reply = self._worker_for(ep.task).call(
                self.action_timeout + GRACE_S, op="exec", code=code, timeout=self.action_timeout
            )
        if reply is None or "fatal" in reply:
            # The worker hung (e.g. a C-level loop) or died: it is killed; the episode ends.
            ep.done = True
            why = (reply or {}).get("fatal", "timeout")
            text = f"The code could not be run: the AppWorld worker stopped ({why})."
            return StepResult(
                text=text, done=True, invalid=True, info={**info, "worker_killed": True}
            )
        self._track_expert(ep, code, expected, reply)
        won = bool(reply.get("won"))
        ep.won = won
        ep.done = bool(reply.get("completed")) or len(ep.actions) >= self.max_steps
        if reply.get("completed"):
            info.update(check=reply.get("reason"), answer=reply.get("answer"))
        elif ep.done:
            info["truncated"] = True
        info.update(refused=bool(reply.get("refused")), changed=bool(reply.get("changed")))
        return StepResult(
            text=str(reply.get("output", "")),
            reward=float(won),
            score=float(won),
            done=ep.done,
            won=won,
            invalid=reply.get("error") is not None,
            info=info,
        )

    def _track_expert(
        self, ep: _Episode, code: str, expected: str | None, reply: dict[str, Any]
    ) -> None:
        if ep.off_path or expected is None or ep.task is None:
            return
        if code.strip() == expected.strip():
            if reply.get("error"):
                ep.off_path = True
            else:
                ep.pure.append(not reply.get("changed"))
                ep.cursor += 1
                ep.deviated = False
        elif reply.get("changed"):
            ep.off_path = True
        else:
            ep.deviated = True

    def expert_action(self) -> str | None:
        """The reference solution's next step from the current progress (see module doc)."""
        ep = self._episode
        if ep is None or ep.task is None or ep.done or ep.off_path:
            return None
        if ep.cursor >= len(ep.task.solution):
            return None
        step = ep.task.solution[ep.cursor]
        if not ep.deviated:
            return step
        redo = [s for s, pure in zip(ep.task.solution[: ep.cursor], ep.pure, strict=True) if pure]
        return "\n".join([*redo, step])

    @property
    def can_snapshot(self) -> bool:
        """Snapshots restore by replaying the code actions."""
        return True

    def snapshot(self) -> Snapshot:
        """The action list of the running episode."""
        if self._episode is None:
            raise EnvError("appworld: nothing to snapshot before reset()")
        return Snapshot(task_id=self._episode.spec.task_id, actions=tuple(self._episode.actions))

    def restore(self, snapshot: Snapshot) -> None:
        """Reset the snapshot's task and replay its actions."""
        self.reset(snapshot.task_id)
        for action in snapshot.actions:
            self.step(action)

    def close(self) -> None:
        """Stop the workers."""
        for worker in (self._worker, self._official_worker):
            if worker is not None and worker.alive() and worker.proc.stdin is not None:
                worker.proc.stdin.close()
                try:
                    worker.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    worker.kill()
        self._worker = self._official_worker = None
