"""The agent loop as a LangGraph `StateGraph`, checkpointed after every node.

Nodes (one episode = one graph thread)::

    start --> step --+--> step ...
                     +--done / no action--> finish -> END

``step`` is one environment step: retrieve demos, run the ladder (`Ladder.decide`, the
one escalation loop: tiers in order until one accepts, then the fallback rule), step the
environment, record. Its ledger rows (model calls, the environment step as a tool call)
and the step row are written in one transaction at the end of the node, and LangGraph
then checkpoints it: one write of each kind per step, the least a durable step needs.

Durability: with a checkpointer the graph runs with ``durability="sync"``. A killed run
resumes from the last finished step: the environment is restored by replaying the
recorded actions (no model calls), finished steps are never billed again, and the step
that was in flight runs again from its start (its calls were not yet written, so they
are recorded once, by the rerun).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from langgraph.graph import END, StateGraph
from opentelemetry.trace import Span

from nightowl import telemetry as tm
from nightowl.agent.budget import STEPS, WALL_S, Budget
from nightowl.agent.env_pool import EnvPool
from nightowl.agent.ladder import Ladder, StepContext
from nightowl.agent.recording import StepRecorder, short_decision
from nightowl.agent.state import (
    HISTORY_KEEP,
    SEEN_KEEP,
    EpisodeResult,
    EpisodeState,
    LoopConfig,
    count_decisions,
    new_counters,
    result_from_state,
    step_counter,
    visit_key,
)
from nightowl.envs.base import Environment
from nightowl.errors import BackendUnavailableError, EnvError, InfrastructureError
from nightowl.ledger.metrics import ERROR_STATUS
from nightowl.ledger.pending import PendingWrites

__all__ = ["AgentGraph", "EpisodeResult", "EpisodeState", "LoopConfig"]


@dataclass
class _Live:
    """Per-episode live objects (never checkpointed)."""

    env: Environment | None = None
    budget: Budget | None = None
    #: the episode's demos when they are retrieved once per episode
    demos: tuple[Any, ...] | None = None
    #: the episode's trace span (a no-op one when tracing is off)
    span: Span | None = None


class AgentGraph:
    """Builds and runs the episode graph for one run.

    Args:
        ladder: the escalation ladder.
        env_factory: makes a fresh environment instance (one per concurrent episode).
        ledger: the cost ledger (None in some unit tests).
        memory: the demo memory (`DemoMemory`), or None for no retrieval.
        config: loop knobs.
        checkpointer: a LangGraph checkpointer (e.g. `AsyncSqliteSaver`), or None.
        env_name: recorded with episodes and environment steps.
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
        self.ledger = ledger
        self.memory = memory
        self.config = config or LoopConfig()
        self.env_name = env_name
        self.envs = EnvPool(env_factory)
        self.recorder = StepRecorder(ledger, record_steps=self.config.record_steps)
        self._live: dict[str, _Live] = {}
        self._in_flight = 0
        #: the dead model backend that stopped this graph's episodes, if any
        self.fatal: BackendUnavailableError | None = None
        self.graph = self._build().compile(checkpointer=checkpointer)

    def _build(self) -> StateGraph:
        g = StateGraph(EpisodeState)
        g.add_node("start", self._start)
        g.add_node("step", self._step)
        g.add_node("finish", self._finish)
        g.set_entry_point("start")
        onward: dict[Hashable, str] = {"finish": "finish", "step": "step"}
        g.add_conditional_edges("start", _route, onward)
        g.add_conditional_edges("step", _route, onward)
        g.add_edge("finish", END)
        return g

    def close(self) -> None:
        """Close pooled environments."""
        self.envs.close()

    # --- live objects -----------------------------------------------------------------
    def _live_of(self, state: EpisodeState) -> _Live:
        return self._live.setdefault(state["episode_id"], _Live())

    def _budget(self, state: EpisodeState) -> Budget:
        live = self._live_of(state)
        if live.budget is None:
            live.budget = Budget.from_dict(state["budget"])
        return live.budget

    async def _blocking(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """Run a blocking call (environment, retrieval).

        In a worker thread only when several episodes run at once: with one in flight
        the hop is pure overhead.
        """
        if self._in_flight > 1:
            return await asyncio.to_thread(fn, *args, **kw)
        return fn(*args, **kw)

    async def _env(self, state: EpisodeState) -> Environment:
        """The live environment of this episode; after a restart, restored by replay."""
        live = self._live_of(state)
        if live.env is None:
            live.env = await self.envs.restored(state["task_id"], state.get("actions") or ())
        return live.env

    # --- nodes ------------------------------------------------------------------------
    async def _start(self, state: EpisodeState) -> dict[str, Any]:
        """Reset the task (first visit only; a resumed episode skips this node)."""
        live = self._live_of(state)
        t0 = time.perf_counter()
        # raises EnvError after a retry on a fresh instance: an infrastructure error
        with self._env_span(state, "reset", parent=live.span):
            live.env, obs = await self.envs.start(state["task_id"], self._blocking)
        stats = dict(state["stats"])
        stats["env_s"] += time.perf_counter() - t0
        return {
            "goal": obs.goal,
            "observation": obs.text,
            "valid_actions": list(obs.valid_actions) if obs.valid_actions else None,
            "stats": stats,
        }

    async def _retrieve(self, state: EpisodeState) -> tuple[tuple[Any, ...], float]:
        """Demo windows for the current step, and the seconds retrieval took."""
        if self.memory is None or not self.config.retrieve:
            return (), 0.0
        live = self._live_of(state)
        if self.config.demos_per == "episode" and live.demos is not None:
            return live.demos, 0.0
        t0 = time.perf_counter()
        try:
            demos = await self._blocking(
                self.memory.retrieve,
                state["goal"],
                state["observation"],
                [tuple(h) for h in (state.get("history") or [])][-self.config.history :],
                k_episodes=self.config.k_episodes,
                k_steps=self.config.k_steps,
                window=self.config.window,
                exclude_task_ids=(state["task_id"],),
            )
        except Exception:  # noqa: BLE001 - no demos is a valid (worse) prompt
            demos = []
        if self.config.demos_per == "episode":
            live.demos = tuple(demos)
        return tuple(demos), time.perf_counter() - t0

    def context(self, state: EpisodeState, demos: tuple[Any, ...] = ()) -> StepContext:
        """The tier context for the current step."""
        hist = tuple(tuple(h) for h in (state.get("history") or []))[-self.config.history :]
        return StepContext(
            run_id=state["run_id"],
            episode_id=state["episode_id"],
            task_id=state["task_id"],
            step=state["step"],
            goal=state["goal"] or "",
            observation=state["observation"],
            valid_actions=tuple(state.get("valid_actions") or ()) or None,
            history=hist,  # type: ignore[arg-type]
            seen=frozenset(state.get("seen") or ()),
            demos=demos,
            budget=self._budget(state),
            env=self._live_of(state).env,
            env_name=state.get("env_name", ""),
            pending=PendingWrites(),
            offload=self._blocking,
        )

    def _env_span(self, state: EpisodeState, op: str, *, parent: Span | None = None) -> Any:
        """The trace span of one environment call (a GenAI ``execute_tool``)."""
        tool = f"{state.get('env_name') or 'env'}.{op}"
        return tm.span(f"execute_tool {tool}", {
            tm.GEN_AI_OPERATION_NAME: "execute_tool", tm.GEN_AI_TOOL_NAME: tool,
            tm.RUN_ID: state["run_id"], tm.EPISODE_ID: state["episode_id"],
            tm.STEP: state["step"], tm.ENV: state.get("env_name") or None,
        }, parent=parent)

    async def _step(self, state: EpisodeState) -> dict[str, Any]:
        """One step: decide (retrieve + ladder), act, record; one transaction, one checkpoint."""
        with tm.span("nightowl.step", {
            tm.RUN_ID: state["run_id"], tm.EPISODE_ID: state["episode_id"],
            tm.STEP: state["step"], tm.TASK_ID: state["task_id"],
        }, parent=self._live_of(state).span) as sp:
            upd = await self._traced_step(state)
            if sp.is_recording():  # the outcome (the decision was set while deciding)
                tm.set_attributes(sp, {
                    tm.ACTION: upd.get("action"), tm.ACTOR: upd.get("actor") or None,
                    "nightowl.done": bool(upd.get("done")),
                    "nightowl.reason": upd.get("reason") or None,
                })
            return upd

    async def _traced_step(self, state: EpisodeState) -> dict[str, Any]:
        t0 = time.perf_counter()
        env = await self._env(state)
        budget = self._budget(state)
        if not budget.can_afford(**{STEPS: 1}):
            return {"done": True, "won": False, "reason": f"budget: {STEPS} exhausted"}
        stats = dict(state["stats"])
        demos, retrieve_s = await self._retrieve(state)
        stats["retrieve_s"] += retrieve_s
        ctx = self.context(state, demos)
        pending = ctx.pending
        assert pending is not None
        t1 = time.perf_counter()
        try:
            outcome = await self.ladder.decide(ctx)
        except InfrastructureError:
            await self.recorder.flush(pending)  # what was called before it failed is billed
            raise
        model_s = time.perf_counter() - t1
        stats["model_s"] += model_s
        count_decisions(stats, outcome.trail)
        trail = [short_decision(d) for d in outcome.trail]
        dec = outcome.decision
        upd: dict[str, Any] = {"trail": trail, "budget": budget.to_dict(), "stats": stats}
        tm.set_attributes(tm.current_span(), {
            tm.DEMOS_RETRIEVED: len(demos), tm.TIER: dec.tier, tm.ACTOR: dec.actor,
            tm.ACCEPTANCE_VERDICT: "accepted" if dec.accepted else "escalated",
            tm.ACCEPTANCE_SIGNAL: float(dec.confidence), tm.ACCEPTANCE_REASON: dec.reason,
            tm.ESCALATIONS: sum(not d.accepted for d in outcome.trail),
            tm.COST_USD: float(sum(d.cost_usd for d in outcome.trail)),
        })
        env_s = 0.0
        if not dec.accepted:
            upd.update(done=True, won=False, reason=dec.reason, action=None)
            await self.recorder.flush(pending)
        else:
            actor = dec.actor if dec.tier != "fallback" else "fallback:" + dec.actor
            env_s = await self._act(state, env, budget, dec.action or "", actor, pending, upd, t0)
        stats["node_s"] += time.perf_counter() - t0 - model_s - retrieve_s - env_s
        return upd

    async def _act(
        self, state: EpisodeState, env: Environment, budget: Budget, action: str, actor: str,
        pending: PendingWrites, upd: dict[str, Any], t0: float,
    ) -> float:
        """Step the environment with ``action``, record the step; fills ``upd``; env seconds.

        ``t0`` is when the step's node started: its wall time is charged to ``wall_s``
        (up to the limit: the clock cannot be refused, the next check ends the episode).
        """
        budget.charge(**{STEPS: 1})
        t1 = time.perf_counter()
        try:
            with self._env_span(state, "step") as esp:
                tm.set_attributes(esp, {tm.ACTION: action, tm.ACTOR: actor})
                env, res = await self.envs.step(
                    env, state["task_id"], state.get("actions") or (), action, self._blocking
                )
                tm.set_attributes(esp, {"nightowl.reward": float(res.reward),
                                        "nightowl.done": bool(res.done)})
        except EnvError as exc:  # failed twice: record the call, then end as an error
            self._live_of(state).env = None  # the pool closed it
            self.recorder.env_step(
                pending, run_id=state["run_id"], episode_id=state["episode_id"],
                step=state["step"], env_name=state.get("env_name", ""),
                latency_s=time.perf_counter() - t1, action=action, actor=actor, error=str(exc),
            )
            await self.recorder.flush(pending)
            raise
        self._live_of(state).env = env  # a fresh instance when the first one failed
        env_s = time.perf_counter() - t1
        budget.charge(**{WALL_S: min(time.perf_counter() - t0, budget.remaining(WALL_S))})
        stats = upd["stats"]
        stats[step_counter(actor)] += 1
        stats["env_s"] += env_s
        hist = list(state.get("history") or []) + [[state["observation"], action]]
        upd.update(
            action=action,
            actor=actor,
            actions=list(state.get("actions") or []) + [action],
            history=hist[-HISTORY_KEEP:],
            seen=[*(state.get("seen") or []), visit_key(state["observation"], action)][
                -SEEN_KEEP:],
            budget=budget.to_dict(),
            step=state["step"] + 1,
            observation=res.text,
            valid_actions=list(res.valid_actions) if res.valid_actions else None,
            score=float(res.score),
            won=bool(res.won),
            done=bool(res.done),
        )
        if res.done:
            upd["reason"] = "won" if res.won else (
                "env step limit" if res.info.get("truncated") else "lost"
            )
        elif budget.exhausted():
            upd.update(done=True, reason=f"budget: {budget.exhausted()} exhausted")
        step_row = {
            "idx": state["step"],
            "observation": state["observation"],
            "action": action,
            "reward": float(res.reward),
            "score": float(res.score),
            "done": bool(res.done),
            "actor": actor.split(":")[-1] or "student",
            "valid_actions": state.get("valid_actions"),
            "meta": {
                "trail": upd["trail"],
                **({"goal": state["goal"]} if state["step"] == 0 else {}),
            },
        }
        self.recorder.env_step(
            pending, run_id=state["run_id"], episode_id=state["episode_id"],
            step=state["step"], env_name=state.get("env_name", ""), latency_s=env_s,
            action=action, actor=actor, error=None,
        )
        await self.recorder.flush(pending, episode_id=state["episode_id"], step_row=step_row)
        return env_s

    async def _finish(self, state: EpisodeState) -> dict[str, Any]:
        """Record the outcome, store a won escalated episode as a demo, free the env."""
        live = self._live_of(state)
        won = bool(state.get("won"))
        reason = state.get("reason") or ("won" if won else "ended")
        await self.recorder.finish_episode(
            state["episode_id"], won, float(state.get("score") or 0.0),
            int(state.get("step") or 0), reason,
        )
        escalated = state["stats"].get("steps_teacher", 0) > 0
        if won and escalated and self.config.store_escalations and self.memory is not None \
                and state.get("goal"):
            with contextlib.suppress(Exception):  # a failed store never fails the episode
                await asyncio.to_thread(self._store_escalation, state)
        if live.env is not None:
            self.envs.release(live.env)
        self._live.pop(state["episode_id"], None)
        return {"finished": True, "done": True, "reason": reason}

    async def _errored(
        self, state: dict[str, Any], cfg: Any, exc: InfrastructureError
    ) -> dict[str, Any]:
        """End an episode on an environment or backend failure: an error, not a loss.

        The ledger row gets status "error" (kept out of success rate and cost-of-pass);
        the checkpoint stays at the last finished step, so a resumed run tries it again.
        A dead model backend also stops the run (`fatal`).
        """
        if self.graph.checkpointer is not None:
            snap = await self.graph.aget_state(cfg)
            state = dict(snap.values) if snap and snap.values else state
        live = self._live.pop(state["episode_id"], None)
        if live is not None:
            await self.envs.discard(live.env)
        reason = " ".join(str(exc).split())
        await self.recorder.finish_episode(
            state["episode_id"], False, float(state.get("score") or 0.0),
            int(state.get("step") or 0), reason, status=ERROR_STATUS,
        )
        if isinstance(exc, BackendUnavailableError) and self.fatal is None:
            self.fatal = exc
        return {**state, "done": True, "won": False, "reason": reason, "error": reason}

    def _store_escalation(self, state: EpisodeState) -> None:
        steps = self.memory.episode_steps(state["episode_id"])
        if steps:
            self.memory.add_episode(state["episode_id"], state["goal"], steps, source="escalation")

    # --- running ----------------------------------------------------------------------
    def initial_state(
        self, *, run_id: str, episode_id: str, task_id: str, split: str
    ) -> EpisodeState:
        """The state a fresh episode starts from."""
        return EpisodeState(
            run_id=run_id, episode_id=episode_id, task_id=task_id, env_name=self.env_name,
            split=split, step=0, goal=None, observation="", valid_actions=None, history=[],
            seen=[], actions=[], trail=[], action=None, actor="", done=False, won=False, score=0.0,
            reason="", budget=self.config.budget.make().to_dict(), stats=new_counters(),
            finished=False,
        )

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
        self._in_flight += 1
        try:
            return await self._run_episode(run_id, task_id, split, tid, cfg, t0)
        finally:
            self._in_flight -= 1

    async def _run_episode(
        self, run_id: str, task_id: str, split: str, tid: str, cfg: Any, t0: float
    ) -> EpisodeResult:
        durability: dict[str, Any] = {}
        values: dict[str, Any] | None = None
        if self.graph.checkpointer is not None:
            durability = {"durability": "sync"}
            snap = await self.graph.aget_state(cfg)
            values = dict(snap.values) if snap and snap.values else None
        if values and values.get("finished"):
            return result_from_state(values, 0.0, resumed=True)
        if not values:
            episode_id = (
                await self.recorder.start_episode(run_id, task_id, self.env_name, split)
                if self.ledger is not None
                else f"{abs(hash(tid)):x}"
            )
            values_or_init = dict(self.initial_state(
                run_id=run_id, episode_id=episode_id, task_id=task_id, split=split
            ))
        else:
            values_or_init = values
        eid = str(values_or_init["episode_id"])
        with tm.span("nightowl.episode", {
            tm.RUN_ID: run_id, tm.EPISODE_ID: eid, tm.TASK_ID: task_id,
            tm.ENV: self.env_name or None, "nightowl.split": split,
            "nightowl.resumed": bool(values),
        }) as sp:
            self._live.setdefault(eid, _Live()).span = sp
            try:
                final = await self.graph.ainvoke(
                    None if values else values_or_init, cfg, **durability
                )
            except InfrastructureError as exc:
                final = await self._errored(values_or_init, cfg, exc)
            finally:
                live = self._live.get(eid)
                if live is not None and live.env is None:
                    self._live.pop(eid, None)  # only the span was left
            res = result_from_state(dict(final), time.perf_counter() - t0, resumed=bool(values))
            tm.set_attributes(sp, {
                "nightowl.won": res.success, "nightowl.steps": res.steps,
                "nightowl.reason": res.reason, tm.COST_USD: float(res.stats.get("cost_usd", 0.0)),
                tm.ERROR_TYPE: "infrastructure" if res.error else None,
            })
            return res

    async def run_many(
        self,
        *,
        run_id: str,
        task_ids: Sequence[str],
        split: str,
        concurrency: int = 4,
        on_done: Callable[[EpisodeResult], None] | None = None,
    ) -> list[EpisodeResult]:
        """Run episodes concurrently (a semaphore bounds how many are in flight).

        Episodes that end on an infrastructure error come back with ``error`` set. After
        a `BackendUnavailableError` (kept in ``fatal``) no further episode starts; those
        in flight finish, and the results list only the episodes that ran.
        """
        sem = asyncio.Semaphore(max(1, concurrency))

        async def one(tid: str) -> EpisodeResult | None:
            async with sem:
                if self.fatal is not None:  # a dead backend: the rest would fail alike
                    return None
                res = await self.run_episode(run_id=run_id, task_id=tid, split=split)
            if on_done is not None:
                on_done(res)
            return res

        done = await asyncio.gather(*(one(t) for t in task_ids))
        return [r for r in done if r is not None]


async def _route(state: EpisodeState) -> str:
    # async on purpose: LangGraph runs a sync router of an async graph in a worker thread
    return "finish" if state.get("done") else "step"
