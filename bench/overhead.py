"""Per-step runtime overhead of the agent loop (issue #12): p50/p99 per step.

Overhead = a step's wall time minus the time spent *inside* the model backend, inside
the environment (reset/step) and inside the query embedder: LangGraph, checkpoints,
ledger and step writes, metering, prompt building, token counting, retrieval (FAISS +
SQL) and every thread hop are overhead. The student is a zero-latency scripted model
(`FunctionModel`, alphabetically first valid action, `unanimity:3`) on TWX coin tasks,
one episode at a time; the first episode of each configuration is a warm-up.

A step's interval runs from the end of the previous environment step (or the episode's
start) to the end of its own environment step; the last one also covers the episode's
finish. Configurations:

1. graph only: no ledger, no checkpointer, no retrieval;
2. + recording: ledger rows (model calls, env step) and step rows;
3. + checkpoints (`InlineSqliteSaver`, the loop's default) -- the issue's main number;
4. + checkpoints via LangGraph's `AsyncSqliteSaver` (what the loop used before);
4b. the teacher-only ladder (oracle; its expert call is environment time);
5. + retrieval from a store of ``--stored`` demo steps (hashing embedder; the query
   embedding is timed and excluded, retrieval itself is reported separately).

Run: ``NIGHTOWL_THREADS=1 python bench/overhead.py [--stored 100000] [--profile]``
(writes bench/results/overhead.json).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import platform
import pstats
import sys
import tempfile
import time
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("OMP_NUM_THREADS", os.environ.get("NIGHTOWL_THREADS", "1"))

import numpy as np  # noqa: E402

from nightowl.agent.acceptance import Unanimity  # noqa: E402
from nightowl.agent.budget import EpisodeBudget  # noqa: E402
from nightowl.agent.graph import AgentGraph, LoopConfig  # noqa: E402
from nightowl.agent.ladder import Ladder  # noqa: E402
from nightowl.agent.tiers import OracleTier, StudentTier  # noqa: E402
from nightowl.checkpoints_sqlite import open_sqlite_checkpointer as open_checkpointer  # noqa: E402
from nightowl.config import FRONTIER_PRICES, SMALL_HOSTED_PRICES  # noqa: E402
from nightowl.envs.registry import make_env  # noqa: E402
from nightowl.ledger import Ledger, MeteredModel  # noqa: E402
from nightowl.llm.base import GenerationRequest, GenerationResult  # noqa: E402
from nightowl.llm.scripted import FunctionModel  # noqa: E402
from nightowl.memory import HashingEmbedder  # noqa: E402
from nightowl.storage import open_db  # noqa: E402


class Clock:
    """Seconds spent inside the model, the environment and the query embedder."""

    def __init__(self) -> None:
        self.model = self.env = self.embed = 0.0
        self.marks: list[tuple[float, float]] = []  # (wall, excluded) after each env step

    @property
    def excluded(self) -> float:
        return self.model + self.env + self.embed

    def mark(self) -> None:
        self.marks.append((time.perf_counter(), self.excluded))


class TimedModel(FunctionModel):
    """The scripted student, timing its own generate calls."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(lambda req: sorted(req.choices)[0] if req.choices else "look around")
        self.clock = clock

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        t0 = time.perf_counter()
        try:
            return await super().generate(request)
        finally:
            self.clock.model += time.perf_counter() - t0


class TimedEnv:
    """An environment proxy timing reset/step/restore and marking each step's end."""

    def __init__(self, env: Any, clock: Clock) -> None:
        self._env, self._clock = env, clock

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)

    def _timed(self, fn: Any, *a: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*a)
        finally:
            self._clock.env += time.perf_counter() - t0

    def reset(self, task_id: str) -> Any:
        return self._timed(self._env.reset, task_id)

    def restore(self, snap: Any) -> Any:
        return self._timed(self._env.restore, snap)

    def expert_action(self) -> Any:  # the oracle teacher: environment time
        return self._timed(self._env.expert_action)

    def step(self, action: str) -> Any:
        try:
            return self._timed(self._env.step, action)
        finally:
            self._clock.mark()


class TimedEmbedder(HashingEmbedder):
    """The hashing embedder, timing its calls (query embedding is excluded)."""

    clock: Clock | None = None

    def embed(self, texts: Any) -> np.ndarray:
        t0 = time.perf_counter()
        try:
            return super().embed(texts)
        finally:
            if self.clock is not None:
                self.clock.embed += time.perf_counter() - t0


def pct(xs: list[float], p: float) -> float:
    return round(float(np.percentile(np.asarray(xs), p)), 3) if xs else float("nan")


@asynccontextmanager
async def checkpointer(kind: str, path: Path) -> Any:
    if kind == "inline":
        with open_checkpointer(path) as saver:
            yield saver
    elif kind == "aiosqlite":
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        async with AsyncSqliteSaver.from_conn_string(str(path)) as saver:
            yield saver
    else:
        yield None


async def run_config(
    *, label: str, tasks: list[str], repeats: int, record: bool, saver_kind: str,
    memory: Any = None, db: Any = None, profile: bool = False, teacher_only: bool = False,
) -> dict[str, Any]:
    """Per-step overhead of one configuration (episodes run one at a time)."""
    clock = Clock()
    work = Path(tempfile.mkdtemp(prefix="nightowl-overhead-"))
    ledger = None
    if record:
        ledger = Ledger(db or open_db(url=f"sqlite:///{work / 'b.db'}"))
    run = ledger.start_run("overhead", "bench", {"label": label}) if ledger else "run"
    student: Any = TimedModel(clock)
    if ledger is not None:
        student = MeteredModel(student, ledger, SMALL_HOSTED_PRICES, run_id=run, role="student")
    ladder = Ladder([StudentTier(student, prices=SMALL_HOSTED_PRICES, rule=Unanimity(3))])
    if teacher_only:  # the oracle, billed by a word-count tokenizer
        ladder = Ladder([OracleTier(ledger=ledger, prices=FRONTIER_PRICES, tokenizer=student)])
    cfg = LoopConfig(budget=EpisodeBudget(max_steps=20), retrieve=memory is not None,
                     store_escalations=False)
    if memory is not None:
        memory.embedder.clock = clock
    intervals: list[float] = []
    retrieve_ms: list[float] = []
    prof = cProfile.Profile() if profile else None
    async with AsyncExitStack() as stack:
        saver = await stack.enter_async_context(checkpointer(saver_kind, work / "ck.sqlite"))
        graph = AgentGraph(
            ladder=ladder, env_factory=lambda: TimedEnv(make_env("twx"), clock), ledger=ledger,
            memory=memory, config=cfg, checkpointer=saver, env_name="twx",
        )
        episodes = [(0, tasks[0])] + [(r, t) for r in range(repeats) for t in tasks]
        for n, (rep, task) in enumerate(episodes):
            warm = n == 0
            clock.marks = [(time.perf_counter(), clock.excluded)]
            if prof is not None and not warm:
                prof.enable()
            res = await graph.run_episode(run_id=run, task_id=task, split="test",
                                          thread_id=f"{run}/{n}/{rep}/{task}")
            if prof is not None and not warm:
                prof.disable()
            clock.mark()
            if warm:
                continue
            marks = clock.marks
            steps = [
                (marks[i][0] - marks[i - 1][0]) - (marks[i][1] - marks[i - 1][1])
                for i in range(1, len(marks))
            ]
            # the closing mark covers the finish node: fold it into the last step
            if len(steps) >= 2:
                steps[-2] += steps.pop()
            intervals += [1000 * s for s in steps]
            if res.steps:
                retrieve_ms.append(1000 * res.stats["retrieve_s"] / res.steps)
        graph.close()
    out: dict[str, Any] = {
        "steps": len(intervals),
        "overhead_p50_ms": pct(intervals, 50),
        "overhead_p90_ms": pct(intervals, 90),
        "overhead_p99_ms": pct(intervals, 99),
        "overhead_max_ms": round(max(intervals), 3) if intervals else None,
        "share_over_15_ms": round(sum(x > 15 for x in intervals) / len(intervals), 4)
        if intervals else None,
        "overhead_mean_ms": round(float(np.mean(intervals)), 3) if intervals else None,
    }
    if memory is not None:
        # retrieve_s includes the (excluded) query embedding; report both for combining
        out["retrieval_incl_query_embedding_mean_ms_per_step"] = round(
            float(np.mean(retrieve_ms)), 3
        )
    if prof is not None:
        buf = io.StringIO()
        st = pstats.Stats(prof, stream=buf)
        st.sort_stats("cumulative").print_stats(30)
        st.sort_stats("tottime").print_stats(15)
        st.print_callers("run_in_executor")
        out["profile"] = buf.getvalue()
    return out


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        cpu = next(
            ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cpus": os.cpu_count(), "load_avg": list(os.getloadavg()),
            "python": platform.python_version()}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    env = make_env("twx")
    try:
        tasks = [t.task_id for t in env.tasks("test") if "/coin/" in t.task_id][: args.tasks]
    finally:
        env.close()
    results: dict[str, Any] = {"machine_start": machine(), "tasks": len(tasks),
                               "repeats": args.repeats, "configs": {}}
    plain = [
        ("graph only", False, "none"),
        ("graph + recording", True, "none"),
        ("graph + recording + checkpoints (inline SQLite saver)", True, "inline"),
        ("graph + recording + checkpoints (AsyncSqliteSaver)", True, "aiosqlite"),
    ]
    # process warm-up (imports, first SQLite/LangGraph use), not reported
    await run_config(label="warm-up", tasks=tasks[:2], repeats=1, record=True,
                     saver_kind="inline")
    for label, record, saver in plain:
        if args.only and args.only not in label:
            continue
        r = await run_config(label=label, tasks=tasks, repeats=args.repeats, record=record,
                             saver_kind=saver, profile=args.profile and saver == "inline")
        if "profile" in r:
            print(r.pop("profile"))
        results["configs"][label] = r
        print(label, {k: v for k, v in r.items()}, flush=True)
    label = "teacher-only (oracle) + recording + checkpoints (inline SQLite saver)"
    if not args.only or args.only in label:
        r = await run_config(label=label, tasks=tasks, repeats=args.repeats, record=True,
                             saver_kind="inline", teacher_only=True,
                             profile=args.profile and args.only == "teacher-only")
        if "profile" in r:
            print(r.pop("profile"))
        results["configs"][label] = r
        print(label, r, flush=True)
    if args.stored > 0 and (not args.only or "retrieval" in args.only):
        from retrieval import fill_sql  # bench/retrieval.py

        from nightowl.memory import DemoMemory, MemorySettings

        root = Path(tempfile.mkdtemp(prefix="nightowl-overhead-store-"))
        t0 = time.perf_counter()
        settings = MemorySettings(threads=int(os.environ.get("NIGHTOWL_THREADS", "1")),
                                  save_interval_s=3600.0, refresh_interval_s=None)
        db = open_db(url=f"sqlite:///{root / 'store.db'}")
        embedder = TimedEmbedder()
        fill_sql(db, args.stored, seed=7, fake=embedder, s=settings)
        mem = DemoMemory(db, embedder, root / "indexes", settings)
        results["store"] = {"steps": args.stored, "fill_s": round(time.perf_counter() - t0, 1)}
        label = f"graph + recording + checkpoints + retrieval ({args.stored} stored steps)"
        r = await run_config(label=label, tasks=tasks, repeats=args.repeats, record=True,
                             saver_kind="inline", memory=mem, db=db,
                             profile=args.profile_retrieval)
        if "profile" in r:
            print(r.pop("profile"))
        results["configs"][label] = r
        print(label, r, flush=True)
        mem.close()
    results["machine_end"] = machine()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=6, help="TWX coin test tasks")
    ap.add_argument("--repeats", type=int, default=2, help="runs over the task list")
    ap.add_argument("--stored", type=int, default=100_000, help="demo steps in the store")
    ap.add_argument("--only", default="", help="run only configurations containing this")
    ap.add_argument("--profile", action="store_true", help="cProfile the inline config")
    ap.add_argument("--profile-retrieval", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "overhead.json"))
    args = ap.parse_args()
    results = asyncio.run(main_async(args))
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "configs"}, indent=1))
    for label, r in results["configs"].items():
        print(f"{label:70s} p50 {r['overhead_p50_ms']:7.2f} ms  p99 {r['overhead_p99_ms']:7.2f} ms"
              f"  ({r['steps']} steps)")


if __name__ == "__main__":
    main()
