"""The agent loop as a LangGraph `StateGraph`, with a SQLite checkpointer.

Nodes (one episode = one graph thread)::

    observe -> retrieve -> propose -> decide --accepted--> act -> record --+--> observe
                              ^          |                                  |
                              |          +--disagree--> escalate --+        +--> finish -> END
                              +------------------------------------+
                                         +--all tiers escalated: fallback (act or finish)

State holds ids and small values (task id, step, current observation and valid actions,
a bounded history, the action list for replay, the budget as plain numbers, counters):
transcripts are never accumulated there. Live objects (the environment, retrieved demo
windows, tiers, the ledger) live in the runner, keyed by episode id.

Durability: the graph runs with ``durability="sync"`` on an `AsyncSqliteSaver`, so each
node's result is on disk before the next node starts. A killed run resumes from the last
finished node: the environment is restored by replaying the recorded actions (no model
calls), and finished steps are never re-billed (only the node that was interrupted runs
again).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from langgraph.graph import END, StateGraph

from nightowl.agent.budget import STEPS, Budget, EpisodeBudget
from nightowl.agent.ladder import Ladder, StepContext, TierDecision
from nightowl.envs.base import Environment, Snapshot

#: how many (observation, action) pairs of history the state keeps
HISTORY_KEEP = 6


class EpisodeState(TypedDict, total=False):
    """Checkpointed per-episode state (small values only)."""

    run_id: str
    episode_id: str
    task_id: str
    env_name: str
    split: str
    step: int
    goal: str
    observation: str
    valid_actions: list[str] | None
    history: list[list[str]]
    actions: list[str]
    n_demos: int
    tier_index: int
    trail: list[dict[str, Any]]
    action: str | None
    actor: str
    route: str
    done: bool
    won: bool
    score: float
    reason: str
    budget: dict[str, dict[str, float]]
    stats: dict[str, float]
    finished: bool


@dataclass(kw_only=True)
class LoopConfig:
    """Knobs of the loop that are not tier-specific."""

    budget: EpisodeBudget = field(default_factory=EpisodeBudget)
    history: int = 3
    retrieve: bool = True
    k_episodes: int = 2
    k_steps: int = 2
    window: int = 3
    store_escalations: bool = True
    record_steps: bool = True
    recursion_limit: int = 100_000


@dataclass(kw_only=True)
class EpisodeResult:
    """What one episode produced (also rebuilt from a finished checkpoint)."""

    run_id: str
    episode_id: str
    task_id: str
    success: bool
    score: float
    steps: int
    reason: str
    stats: dict[str, float]
    budget: dict[str, dict[str, float]]
    wall_s: float = 0.0
    resumed: bool = False


@dataclass
class _Runtime:
    env: Environment | None = None
    demos: dict[int, tuple[Any, ...]] = field(default_factory=dict)
    budget: Budget | None = None
    step_rows: list[dict[str, Any]] = field(default_factory=list)


def _counters() -> dict[str, float]:
    return {
        "student_samples": 0.0,
        "student_calls": 0.0,
        "teacher_calls": 0.0,
        "escalations": 0.0,
        "steps_student": 0.0,
        "steps_teacher": 0.0,
        "steps_fallback": 0.0,
        "cost_usd": 0.0,
        "model_s": 0.0,
        "env_s": 0.0,
        "retrieve_s": 0.0,
        "node_s": 0.0,
        "parse_failures": 0.0,
    }


class AgentGraph:
    """Builds and runs the episode graph for one run.

    Args:
        ladder: the escalation ladder.
        env_factory: makes a fresh environment instance (one per concurrent episode).
        ledger: the cost ledger (None in some unit tests).
        memory: the demo memory (`DemoMemory`), or None for no retrieval.
        config: loop knobs.
        checkpointer: a LangGraph checkpointer (e.g. `AsyncSqliteSaver`), or None.
    """

    def __init__(
        self,
        *,
        ladder: Ladder,
        env_factory: Callable[[], Environment],
        ledger: Any = None,
        memory: Any = None,
        config: LoopConfig | None = None,
        checkpointer: Any = None,
        env_name: str = "",
    ) -> None:
        self.ladder = ladder
        self.env_factory = env_factory
        self.ledger = ledger
        self.memory = memory
        self.config = config or LoopConfig()
        self.env_name = env_name
        self._rt: dict[str, _Runtime] = {}
        self._env_pool: list[Environment] = []
        self._pool_lock = asyncio.Lock()
        self.graph = self._build().compile(checkpointer=checkpointer)

    # --- graph ----------------------------------------------------------------------
    def _build(self) -> StateGraph:
        g = StateGraph(EpisodeState)
        g.add_node("observe", self._observe)
        g.add_node("retrieve", self._retrieve)
        g.add_node("propose", self._propose)
        g.add_node("decide", self._decide)
        g.add_node("escalate", self._escalate)
        g.add_node("act", self._act)
        g.add_node("record", self._record)
        g.add_node("finish", self._finish)
        g.set_entry_point("observe")
        g.add_conditional_edges(
            "observe", lambda s: "finish" if s.get("done") else "retrieve",
            {"finish": "finish", "retrieve": "retrieve"},
        )
        g.add_edge("retrieve", "propose")
        g.add_edge("propose", "decide")
        g.add_conditional_edges(
            "decide", lambda s: s["route"],
            {"act": "act", "escalate": "escalate", "finish": "finish"},
        )
        g.add_edge("escalate", "propose")
        g.add_edge("act", "record")
        g.add_conditional_edges(
            "record", lambda s: "finish" if s.get("done") else "observe",
            {"finish": "finish", "observe": "observe"},
        )
        g.add_edge("finish", END)
        return g

    # --- runtime helpers --------------------------------------------------------------
    async def _acquire_env(self) -> Environment:
        async with self._pool_lock:
            if self._env_pool:
                return self._env_pool.pop()
        return await asyncio.to_thread(self.env_factory)

    def _release_env(self, env: Environment) -> None:
        self._env_pool.append(env)

    def close(self) -> None:
        """Close pooled environments."""
        for env in self._env_pool:
            try:
                env.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
        self._env_pool.clear()

    def _runtime(self, state: EpisodeState) -> _Runtime:
        return self._rt.setdefault(state["episode_id"], _Runtime())

    def _budget(self, state: EpisodeState) -> Budget:
        rt = self._runtime(state)
        if rt.budget is None:
            rt.budget = Budget.from_dict(state["budget"])
        return rt.budget

    async def _ensure_env(self, state: EpisodeState) -> Environment:
        """The live environment of this episode; after a restart, restored by replay."""
        rt = self._runtime(state)
        if rt.env is None:
            env = await self._acquire_env()
            actions = tuple(state.get("actions") or ())
            if state.get("goal") is not None and actions:
                if env.can_snapshot:
                    await asyncio.to_thread(
                        env.restore, Snapshot(task_id=state["task_id"], actions=actions)
                    )
                else:
                    await asyncio.to_thread(env.reset, state["task_id"])
                    for a in actions:
                        await asyncio.to_thread(env.step, a)
            elif state.get("goal") is not None:
                await asyncio.to_thread(env.reset, state["task_id"])
            rt.env = env
        return rt.env

    # --- nodes --------------------------------------------------------------------------
    async def _observe(self, state: EpisodeState) -> dict[str, Any]:
        t0 = time.perf_counter()
        rt = self._runtime(state)
        upd: dict[str, Any] = {"tier_index": 0, "trail": [], "action": None, "actor": ""}
        if state.get("goal") is None:  # first visit: reset the task
            env = await self._acquire_env()
            rt.env = env
            t1 = time.perf_counter()
            try:
                obs = await asyncio.to_thread(env.reset, state["task_id"])
            except Exception as exc:  # noqa: BLE001 - recorded as the episode's end
                upd.update(done=True, won=False, reason=f"env reset failed: {exc}", goal="")
                return upd
            env_s = time.perf_counter() - t1
            upd.update(
                goal=obs.goal,
                observation=obs.text,
                valid_actions=list(obs.valid_actions) if obs.valid_actions else None,
            )
            stats = dict(state["stats"])
            stats["env_s"] += env_s
            stats["node_s"] += time.perf_counter() - t0 - env_s
            upd["stats"] = stats
        else:
            await self._ensure_env(state)
        budget = self._budget(state)
        if not budget.can_afford(**{STEPS: 1}):
            upd.update(done=True, won=False, reason=f"budget: {STEPS} exhausted")
        return upd

    async def _retrieve(self, state: EpisodeState) -> dict[str, Any]:
        rt = self._runtime(state)
        step = state["step"]
        if self.memory is None or not self.config.retrieve:
            rt.demos[step] = ()
            return {"n_demos": 0}
        t0 = time.perf_counter()
        hist = [tuple(h) for h in (state.get("history") or [])][-self.config.history :]
        try:
            demos = await asyncio.to_thread(
                self.memory.retrieve,
                state["goal"],
                state["observation"],
                hist,
                k_episodes=self.config.k_episodes,
                k_steps=self.config.k_steps,
                window=self.config.window,
                exclude_task_ids=(state["task_id"],),
            )
        except Exception:  # noqa: BLE001 - no demos is a valid (worse) prompt
            demos = []
        rt.demos[step] = tuple(demos)
        stats = dict(state["stats"])
        stats["retrieve_s"] += time.perf_counter() - t0
        return {"n_demos": len(demos), "stats": stats}

    def context(self, state: EpisodeState) -> StepContext:
        """The tier context for the current step."""
        rt = self._runtime(state)
        hist = tuple(tuple(h) for h in (state.get("history") or []))[-self.config.history :]
        return StepContext(
            run_id=state["run_id"],
            episode_id=state["episode_id"],
            task_id=state["task_id"],
            step=state["step"],
            goal=state["goal"],
            observation=state["observation"],
            valid_actions=tuple(state.get("valid_actions") or ()) or None,
            history=hist,  # type: ignore[arg-type]
            demos=rt.demos.get(state["step"], ()),
            budget=self._budget(state),
            env=rt.env,
            env_name=state.get("env_name", ""),
            previous=tuple(TierDecision.from_dict(d) for d in state.get("trail") or []),
        )

    async def _propose(self, state: EpisodeState) -> dict[str, Any]:
        t0 = time.perf_counter()
        rt = self._runtime(state)
        if state["step"] not in rt.demos:  # resumed mid-step: retrieve again (deterministic)
            await self._retrieve(state)
        tier = self.ladder.tier(state["tier_index"])
        ctx = self.context(state)
        t1 = time.perf_counter()
        dec = await tier.decide(ctx)
        model_s = time.perf_counter() - t1
        stats = dict(state["stats"])
        if dec.actor == "student":
            stats["student_samples"] += dec.samples
            stats["student_calls"] += int(dec.meta.get("calls", 1))
            stats["parse_failures"] += int(dec.meta.get("parse_failures", 0))
        stats["teacher_calls"] += dec.teacher_calls
        stats["cost_usd"] += dec.cost_usd
        stats["model_s"] += model_s
        stats["node_s"] += time.perf_counter() - t0 - model_s
        return {
            "trail": list(state.get("trail") or []) + [dec.to_dict()],
            "budget": ctx.budget.to_dict(),
            "stats": stats,
        }

    async def _decide(self, state: EpisodeState) -> dict[str, Any]:
        trail = [TierDecision.from_dict(d) for d in state["trail"]]
        last = trail[-1]
        if last.accepted:
            return {"route": "act", "action": last.action, "actor": last.actor}
        if state["tier_index"] + 1 < len(self.ladder.tiers):
            return {"route": "escalate"}
        final = self.ladder.resolve(trail)
        if final.accepted:
            return {"route": "act", "action": final.action, "actor": "fallback:" + final.actor}
        return {"route": "finish", "done": True, "won": False, "reason": final.reason}

    async def _escalate(self, state: EpisodeState) -> dict[str, Any]:
        stats = dict(state["stats"])
        stats["escalations"] += 1
        return {"tier_index": state["tier_index"] + 1, "stats": stats}

    async def _act(self, state: EpisodeState) -> dict[str, Any]:
        t0 = time.perf_counter()
        env = await self._ensure_env(state)
        budget = self._budget(state)
        budget.charge(**{STEPS: 1})
        action = state["action"] or ""
        t1 = time.perf_counter()
        try:
            res = await asyncio.to_thread(env.step, action)
            err = None
        except Exception as exc:  # noqa: BLE001 - the env crashed: end, recorded
            res = None
            err = f"{type(exc).__name__}: {exc}"
        env_s = time.perf_counter() - t1
        if self.ledger is not None:
            await asyncio.to_thread(
                self.ledger.record_tool_call,
                run_id=state["run_id"],
                episode_id=state["episode_id"],
                step=state["step"],
                tool=f"env:{state.get('env_name', '')}",
                latency_s=env_s,
                meta={"action": action[:200], **({"error": err} if err else {})},
            )
        stats = dict(state["stats"])
        actor = state.get("actor") or ""
        key = (
            "steps_fallback" if actor.startswith("fallback")
            else "steps_student" if actor == "student" else "steps_teacher"
        )
        stats[key] = stats.get(key, 0.0) + 1
        stats["env_s"] += env_s
        hist = list(state.get("history") or []) + [[state["observation"], action]]
        upd: dict[str, Any] = {
            "actions": list(state.get("actions") or []) + [action],
            "history": hist[-HISTORY_KEEP:],
            "budget": budget.to_dict(),
            "stats": stats,
        }
        if res is None:
            upd.update(done=True, won=False, reason=f"env error: {err}")
            stats["node_s"] += time.perf_counter() - t0 - env_s
            return upd
        upd.update(
            observation=res.text,
            valid_actions=list(res.valid_actions) if res.valid_actions else None,
            score=float(res.score),
            won=bool(res.won),
            done=bool(res.done),
        )
        if res.done:
            if res.won:
                upd["reason"] = "won"
            else:
                upd["reason"] = "env step limit" if res.info.get("truncated") else "lost"
        elif budget.exhausted():
            upd.update(done=True, reason=f"budget: {budget.exhausted()} exhausted")
        rt = self._runtime(state)
        rt.step_rows.append(
            {
                "idx": state["step"],
                "observation": state["observation"],
                "action": action,
                "reward": float(res.reward),
                "score": float(res.score),
                "done": bool(res.done),
                "actor": actor.split(":")[-1] or "student",
                "valid_actions": state.get("valid_actions"),
                "meta": {
                    "trail": [_short(d) for d in state.get("trail") or []],
                    **({"goal": state["goal"]} if state["step"] == 0 else {}),
                },
            }
        )
        stats["node_s"] += time.perf_counter() - t0 - env_s
        return upd

    async def _record(self, state: EpisodeState) -> dict[str, Any]:
        t0 = time.perf_counter()
        rt = self._runtime(state)
        rows = [r for r in rt.step_rows if r["idx"] == state["step"]]
        if self.config.record_steps and rows:
            if self.memory is not None:
                await asyncio.to_thread(self.memory.record_steps, state["episode_id"], rows[-1:])
            else:
                await asyncio.to_thread(_write_steps, self.ledger, state["episode_id"], rows[-1:])
        rt.demos.pop(state["step"], None)
        stats = dict(state["stats"])
        stats["node_s"] += time.perf_counter() - t0
        return {"step": state["step"] + 1, "stats": stats}

    async def _finish(self, state: EpisodeState) -> dict[str, Any]:
        rt = self._runtime(state)
        won = bool(state.get("won"))
        reason = state.get("reason") or ("won" if won else "ended")
        if self.ledger is not None:
            await asyncio.to_thread(
                self.ledger.finish_episode,
                state["episode_id"],
                won,
                float(state.get("score") or 0.0),
                int(state.get("step") or 0),
                reason,
            )
        stats = state["stats"]
        escalated = stats.get("steps_teacher", 0) > 0
        if (
            won
            and escalated
            and self.config.store_escalations
            and self.memory is not None
            and state.get("goal")
        ):
            try:
                await asyncio.to_thread(self._store_escalation, state)
            except Exception:  # noqa: BLE001 - a failed store never fails the episode
                pass
        if rt.env is not None:
            self._release_env(rt.env)
            rt.env = None
        self._rt.pop(state["episode_id"], None)
        return {"finished": True, "done": True, "reason": reason}

    def _store_escalation(self, state: EpisodeState) -> None:
        steps = self.memory.episode_steps(state["episode_id"])
        if not steps:
            return
        self.memory.add_episode(state["episode_id"], state["goal"], steps, source="escalation")

    # --- running ------------------------------------------------------------------------
    def initial_state(
        self, *, run_id: str, episode_id: str, task_id: str, split: str
    ) -> EpisodeState:
        """The state a fresh episode starts from."""
        return EpisodeState(
            run_id=run_id,
            episode_id=episode_id,
            task_id=task_id,
            env_name=self.env_name,
            split=split,
            step=0,
            goal=None,  # type: ignore[typeddict-item]
            observation="",
            valid_actions=None,
            history=[],
            actions=[],
            n_demos=0,
            tier_index=0,
            trail=[],
            action=None,
            actor="",
            route="",
            done=False,
            won=False,
            score=0.0,
            reason="",
            budget=self.config.budget.make().to_dict(),
            stats=_counters(),
            finished=False,
        )

    def _durability(self) -> dict[str, Any]:
        return {"durability": "sync"} if self.graph.checkpointer is not None else {}

    async def run_episode(
        self, *, run_id: str, task_id: str, split: str, thread_id: str | None = None
    ) -> EpisodeResult:
        """Run (or resume, or return the finished result of) one episode."""
        t0 = time.perf_counter()
        tid = thread_id or f"{run_id}/{task_id}"
        cfg: Any = {
            "configurable": {"thread_id": tid},
            "recursion_limit": self.config.recursion_limit,
        }
        resumed = False
        values: dict[str, Any] | None = None
        if self.graph.checkpointer is not None:
            snap = await self.graph.aget_state(cfg)
            values = dict(snap.values) if snap and snap.values else None
        if values and values.get("finished"):
            return _result(values, 0.0, resumed=True)
        if values:
            resumed = True
            final = await self.graph.ainvoke(None, cfg, **self._durability())
        else:
            episode_id = (
                self.ledger.start_episode(run_id, task_id, self.env_name, split)
                if self.ledger is not None
                else f"{abs(hash(tid)):x}"
            )
            init = self.initial_state(
                run_id=run_id, episode_id=episode_id, task_id=task_id, split=split
            )
            final = await self.graph.ainvoke(init, cfg, **self._durability())
        return _result(dict(final), time.perf_counter() - t0, resumed=resumed)

    async def run_many(
        self,
        *,
        run_id: str,
        task_ids: Sequence[str],
        split: str,
        concurrency: int = 4,
        on_done: Callable[[EpisodeResult], None] | None = None,
    ) -> list[EpisodeResult]:
        """Run episodes concurrently (a semaphore bounds how many are in flight)."""
        sem = asyncio.Semaphore(max(1, concurrency))

        async def one(tid: str) -> EpisodeResult:
            async with sem:
                res = await self.run_episode(run_id=run_id, task_id=tid, split=split)
            if on_done is not None:
                on_done(res)
            return res

        return list(await asyncio.gather(*(one(t) for t in task_ids)))


def _short(d: dict[str, Any]) -> dict[str, Any]:
    return {
        "tier": d.get("tier"),
        "action": d.get("action"),
        "reason": (d.get("reason") or "")[:160],
        "samples": d.get("samples"),
        "confidence": round(float(d.get("confidence") or 0.0), 4),
        "candidates": (d.get("candidates") or [])[:4],
    }


def _result(values: dict[str, Any], wall: float, *, resumed: bool) -> EpisodeResult:
    return EpisodeResult(
        run_id=values["run_id"],
        episode_id=values["episode_id"],
        task_id=values["task_id"],
        success=bool(values.get("won")),
        score=float(values.get("score") or 0.0),
        steps=int(values.get("step") or 0),
        reason=str(values.get("reason") or ""),
        stats=dict(values.get("stats") or {}),
        budget=dict(values.get("budget") or {}),
        wall_s=wall,
        resumed=resumed,
    )


def _write_steps(ledger: Any, episode_id: str, rows: list[dict[str, Any]]) -> None:
    """Append step rows to the ``steps`` table (idempotent on (episode, idx))."""
    if ledger is None:
        return
    from sqlalchemy import select

    from nightowl.memory.schema import StepRow

    def _do(s: Any) -> None:
        for r in rows:
            exists = s.execute(
                select(StepRow.id).where(
                    StepRow.episode_id == episode_id, StepRow.idx == r["idx"]
                )
            ).first()
            if exists is None:
                s.add(StepRow(episode_id=episode_id, **r))

    ledger.db.write(_do)


def _read_steps(ledger: Any, episode_id: str) -> list[Any]:
    from sqlalchemy import select

    from nightowl.memory.schema import StepRow

    def _do(s: Any) -> list[dict[str, Any]]:
        rows = s.execute(
            select(StepRow).where(StepRow.episode_id == episode_id).order_by(StepRow.idx)
        ).scalars()
        return [
            {
                "idx": r.idx,
                "observation": r.observation,
                "action": r.action,
                "reward": r.reward,
                "score": r.score,
                "done": r.done,
                "actor": r.actor,
                "valid_actions": r.valid_actions,
                "step_id": r.id,
            }
            for r in rows
        ]

    return list(ledger.db.read(_do))


def checkpoint_path(home: Path) -> Path:
    """Where the loop's SQLite checkpoints live."""
    return home / "checkpoints.sqlite"
