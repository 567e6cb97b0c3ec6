"""Reading the ledger: run lookup, call lists, run reports, per-episode costs, break-even.

`LedgerReads` is the read half of `Ledger` (which inherits it); definitions of the
metrics are in docs/storage.md and `nightowl.ledger.metrics`.
"""


from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from nightowl.errors import UnknownNameError
from nightowl.ledger.leases import EpisodeLease, LeaseRow
from nightowl.ledger.metrics import (
    ACTING_ROLES,
    ENV_TOOL_PREFIX,
    ERROR_STATUS,
    TEACHER_ACTORS,
    TEACHER_ROLE,
    BreakEven,
    EpisodeCost,
    LeaseView,
    RoleStats,
    RunReport,
    RunSummary,
    break_even_episodes,
    cost_of_pass,
    teacher_share,
)
from nightowl.ledger.tables import Episode, ModelCall, Run, ToolCall, as_utc
from nightowl.storage import Database


def _calls_cost(s: Session, run_id: str, of_episodes: Callable[[Any], Any]) -> float:
    """Model plus tool cost of a run's calls whose ``episode_id`` passes ``of_episodes``."""
    return sum(
        float(s.execute(select(func.coalesce(func.sum(t.cost_usd), 0.0)).where(
            t.run_id == run_id, of_episodes(t.episode_id))).scalar_one())
        for t in (ModelCall, ToolCall)
    )


def _view(r: LeaseRow) -> LeaseView:
    age = r.age_s()
    return LeaseView(task_id=r.task_id, state=r.state, host=r.host, pid=r.pid, step=r.step,
                     attempt=r.attempt, requeues=r.requeues, reason=r.reason,
                     heartbeat_age_s=None if age is None else round(age, 1))


class LedgerReads:
    """Queries over the ledger's tables (mixed into `Ledger`)."""

    db: Database

    # reading
    def run_exists(self, run_id: str) -> bool:
        """Whether a run with this exact id exists."""
        return self.db.read(lambda s: s.get(Run, run_id) is not None)

    def resolve_run_id(self, run_id_or_prefix: str) -> str:
        """The full id of a run given its id or a unique prefix (at least 4 characters)."""
        if self.run_exists(run_id_or_prefix):
            return run_id_or_prefix
        key = run_id_or_prefix.strip().lower()
        if key != run_id_or_prefix and self.run_exists(key):
            return key
        if len(key) >= 4 and all(c in "0123456789abcdef" for c in key):
            ids = self.db.read(
                lambda s: list(s.scalars(select(Run.id).where(Run.id.like(key + "%")).limit(2)))
            )
            if len(ids) == 1:
                return ids[0]
        raise UnknownNameError("run", run_id_or_prefix)

    def get_run(self, run_id: str) -> Run:
        """The run row, or `UnknownNameError`."""
        row = self.db.read(lambda s: s.get(Run, run_id))
        if row is None:
            raise UnknownNameError("run", run_id)
        return row

    def list_runs(self, limit: int = 20, kind: str | None = None) -> list[RunSummary]:
        """The most recent runs, newest first."""

        def _do(s: Session) -> list[RunSummary]:
            q = select(Run).order_by(Run.created_at.desc(), Run.id).limit(limit)
            if kind:
                q = q.where(Run.kind == kind)
            runs = list(s.scalars(q))
            if not runs:
                return []
            ids = [r.id for r in runs]
            ep = {
                rid: (int(n), int(succ or 0))
                for rid, n, succ in s.execute(
                    select(
                        Episode.run_id,
                        func.count(Episode.id),
                        func.sum(case((Episode.success.is_(True), 1), else_=0)),
                    )
                    .where(Episode.run_id.in_(ids))
                    .group_by(Episode.run_id)
                )
            }
            costs: dict[str, float] = {}
            for table in (ModelCall, ToolCall):
                for rid, c in s.execute(
                    select(table.run_id, func.sum(table.cost_usd))
                    .where(table.run_id.in_(ids))
                    .group_by(table.run_id)
                ):
                    costs[rid] = costs.get(rid, 0.0) + float(c or 0.0)
            return [
                RunSummary(
                    run_id=r.id,
                    name=r.name,
                    kind=r.kind,
                    created_at=as_utc(r.created_at) or r.created_at,
                    n_episodes=ep.get(r.id, (0, 0))[0],
                    successes=ep.get(r.id, (0, 0))[1],
                    total_cost=costs.get(r.id, 0.0),
                )
                for r in runs
            ]

        return self.db.read(_do)

    def model_calls(self, run_id: str, episode_id: str | None = None) -> list[ModelCall]:
        """The model calls of a run (or of one episode), in order."""
        q = select(ModelCall).where(ModelCall.run_id == run_id)
        if episode_id is not None:
            q = q.where(ModelCall.episode_id == episode_id)
        return self.db.read(lambda s: list(s.scalars(q.order_by(ModelCall.id))))

    def run_report(self, run_id: str) -> RunReport:
        """Aggregate one run. Raises `UnknownNameError` for an unknown run id."""
        return self.db.read(lambda s: self._report(s, run_id))

    def _report(self, s: Session, run_id: str) -> RunReport:
        run = s.get(Run, run_id)
        if run is None:
            raise UnknownNameError("run", run_id)
        roles: dict[str, RoleStats] = {}
        models: dict[str, float] = {}
        last: list[datetime] = []
        rows = s.execute(
            select(
                ModelCall.role,
                ModelCall.kind,
                ModelCall.ok,
                ModelCall.model,
                func.count(ModelCall.id),
                func.coalesce(func.sum(ModelCall.prompt_tokens), 0),
                func.coalesce(func.sum(ModelCall.cached_prompt_tokens), 0),
                func.coalesce(func.sum(ModelCall.completion_tokens), 0),
                func.coalesce(func.sum(ModelCall.cost_usd), 0.0),
                func.coalesce(func.sum(ModelCall.latency_s), 0.0),
                func.max(ModelCall.created_at),
            )
            .where(ModelCall.run_id == run_id)
            .group_by(ModelCall.role, ModelCall.kind, ModelCall.ok, ModelCall.model)
        )
        for role, kind, ok, model, n, pt, cpt, ct, cost, lat, mx in rows:
            st = roles.setdefault(role, RoleStats(role=role))
            st.calls += int(n)
            if kind == "score":
                st.score_calls += int(n)
            else:
                st.generate_calls += int(n)
            if not ok:
                st.failed_calls += int(n)
            st.prompt_tokens += int(pt)
            st.cached_prompt_tokens += int(cpt)
            st.completion_tokens += int(ct)
            st.cost_usd += float(cost)
            st.latency_s += float(lat)
            models[model] = models.get(model, 0.0) + float(cost)
            if mx is not None:
                last.append(as_utc(mx))  # type: ignore[arg-type]
        n_tool, tool_cost, tool_last = s.execute(
            select(
                func.count(ToolCall.id),
                func.coalesce(func.sum(ToolCall.cost_usd), 0.0),
                func.max(ToolCall.created_at),
            ).where(ToolCall.run_id == run_id)
        ).one()
        if tool_last is not None:
            last.append(as_utc(tool_last))  # type: ignore[arg-type]
        n_ep, n_fin, n_succ, ep_last = s.execute(
            select(
                func.count(Episode.id),
                func.coalesce(func.sum(case((Episode.status != "running", 1), else_=0)), 0),
                func.coalesce(func.sum(case((Episode.success.is_(True), 1), else_=0)), 0),
                func.max(Episode.ended_at),
            ).where(Episode.run_id == run_id)
        ).one()
        if ep_last is not None:
            last.append(as_utc(ep_last))  # type: ignore[arg-type]
        unattributed = _calls_cost(s, run_id, lambda episode_id: episode_id.is_(None))

        env_steps = teacher_steps = 0
        for (meta,) in s.execute(
            select(ToolCall.meta).where(
                ToolCall.run_id == run_id, ToolCall.tool.startswith(ENV_TOOL_PREFIX)
            )
        ):
            env_steps += 1
            teacher_steps += bool(meta and meta.get("actor") in TEACHER_ACTORS)
        n_ep, n_fin, n_succ = int(n_ep), int(n_fin), int(n_succ)
        errors, error_cost = self._errors(s, run_id)
        n_err = sum(errors.values())
        model_cost = sum(r.cost_usd for r in roles.values())
        total = model_cost + float(tool_cost)
        # infrastructure errors are no outcome of the agent's: out of rate and per-episode
        success_rate = n_succ / (n_fin - n_err) if n_fin > n_err else 0.0
        n_played = n_ep - n_err
        per_episode = (total - error_cost) / n_played if n_played > 0 else 0.0
        teacher = roles[TEACHER_ROLE].generate_calls if TEACHER_ROLE in roles else 0
        acting = sum(roles[r].generate_calls for r in ACTING_ROLES if r in roles)
        created = as_utc(run.created_at) or run.created_at
        wall = max((t - created).total_seconds() for t in last) if last else 0.0
        leases = [LeaseRow.of(r) for r in s.scalars(
            select(EpisodeLease).where(EpisodeLease.run_id == run_id)
            .order_by(EpisodeLease.queued_at, EpisodeLease.task_id))]
        tasks = (run.config or {}).get("tasks") if isinstance(run.config, dict) else None
        planned = len(leases) or (len(tasks) if isinstance(tasks, list) else None)
        return RunReport(
            run_id=run.id,
            name=run.name,
            kind=run.kind,
            created_at=created,
            n_episodes=n_ep,
            n_finished=n_fin,
            successes=n_succ,
            success_rate=success_rate,
            model_cost=model_cost,
            tool_cost=float(tool_cost),
            total_cost=total,
            overhead_cost=float(unattributed),
            cost_per_episode=per_episode,
            cost_of_pass=cost_of_pass(per_episode, success_rate) if n_played > 0 else math.inf,
            errors=n_err,
            error_reasons=errors,
            error_cost=error_cost,
            model_calls=sum(r.calls for r in roles.values()),
            failed_model_calls=sum(r.failed_calls for r in roles.values()),
            tool_calls=int(n_tool),
            teacher_calls=teacher,
            acting_calls=acting,
            teacher_call_share=teacher / acting if acting else 0.0,
            env_steps=env_steps,
            teacher_steps=teacher_steps,
            teacher_share=teacher_share(teacher_steps, env_steps),
            prompt_tokens=sum(r.prompt_tokens for r in roles.values()),
            cached_prompt_tokens=sum(r.cached_prompt_tokens for r in roles.values()),
            completion_tokens=sum(r.completion_tokens for r in roles.values()),
            roles=dict(sorted(roles.items())),
            models=dict(sorted(models.items())),
            wall_time_s=max(wall, 0.0),
            n_planned=planned,
            in_flight=[_view(r) for r in leases if r.state == "running"],
            queued=sum(r.state == "queued" for r in leases),
            requeued=[_view(r) for r in leases if r.requeues],
            failed=[_view(r) for r in leases if r.state == "failed"],
        )

    @staticmethod
    def _errors(s: Session, run_id: str) -> tuple[dict[str, int], float]:
        """Episodes that ended on an infrastructure error: (count per reason, their cost)."""
        reasons: dict[str, int] = {}
        ids: list[str] = []
        for eid, reason in s.execute(
            select(Episode.id, Episode.reason).where(
                Episode.run_id == run_id, Episode.status == ERROR_STATUS
            )
        ):
            ids.append(eid)
            key = (reason or "unknown")[:120]
            reasons[key] = reasons.get(key, 0) + 1
        cost = _calls_cost(s, run_id, lambda episode_id: episode_id.in_(ids)) if ids else 0.0
        return dict(sorted(reasons.items(), key=lambda kv: -kv[1])), cost

    def episode_costs(self, run_id: str) -> list[EpisodeCost]:
        """Per-episode cost and outcome of a run, in start order."""

        def _do(s: Session) -> list[EpisodeCost]:
            if s.get(Run, run_id) is None:
                raise UnknownNameError("run", run_id)
            eps = list(
                s.scalars(
                    select(Episode)
                    .where(Episode.run_id == run_id)
                    .order_by(Episode.started_at, Episode.id)
                )
            )
            calls: dict[str, dict[str, Any]] = {}
            empty = {"n": 0, "teacher": 0, "student": 0, "pt": 0, "ct": 0, "cost": 0.0}
            for eid, role, kind, n, pt, ct, cost in s.execute(
                select(
                    ModelCall.episode_id,
                    ModelCall.role,
                    ModelCall.kind,
                    func.count(ModelCall.id),
                    func.coalesce(func.sum(ModelCall.prompt_tokens), 0),
                    func.coalesce(func.sum(ModelCall.completion_tokens), 0),
                    func.coalesce(func.sum(ModelCall.cost_usd), 0.0),
                )
                .where(ModelCall.run_id == run_id, ModelCall.episode_id.is_not(None))
                .group_by(ModelCall.episode_id, ModelCall.role, ModelCall.kind)
            ):
                c = calls.setdefault(str(eid), dict(empty))
                c["n"] += int(n)
                if kind != "score" and role in ("teacher", "student"):
                    c[role] += int(n)
                c["pt"] += int(pt)
                c["ct"] += int(ct)
                c["cost"] += float(cost)
            tools = {
                eid: (int(n), float(cost))
                for eid, n, cost in s.execute(
                    select(
                        ToolCall.episode_id,
                        func.count(ToolCall.id),
                        func.coalesce(func.sum(ToolCall.cost_usd), 0.0),
                    )
                    .where(ToolCall.run_id == run_id, ToolCall.episode_id.is_not(None))
                    .group_by(ToolCall.episode_id)
                )
            }
            out = []
            for e in eps:
                c = calls.get(e.id, empty)
                tn, tc = tools.get(e.id, (0, 0.0))
                out.append(
                    EpisodeCost(
                        episode_id=e.id,
                        task_id=e.task_id,
                        env=e.env,
                        split=e.split,
                        status=e.status,
                        success=e.success,
                        score=e.score,
                        n_steps=e.n_steps,
                        model_calls=c["n"],
                        teacher_calls=c["teacher"],
                        student_calls=c["student"],
                        prompt_tokens=c["pt"],
                        completion_tokens=c["ct"],
                        model_cost=c["cost"],
                        tool_calls=tn,
                        tool_cost=tc,
                        cost_usd=c["cost"] + tc,
                    )
                )
            return out

        return self.db.read(_do)

    def break_even(self, collection_run: str, teacher_only_run: str, our_run: str) -> BreakEven:
        """Break-even episodes from recorded runs.

        ``collection_cost`` is the total cost of ``collection_run``; the per-episode costs
        are the ``cost_per_episode`` of ``teacher_only_run`` and ``our_run``.
        """
        collect = self.run_report(collection_run)
        teacher = self.run_report(teacher_only_run)
        ours = self.run_report(our_run)
        return BreakEven(
            collection_run=collect.run_id,
            teacher_only_run=teacher.run_id,
            our_run=ours.run_id,
            collection_cost=collect.total_cost,
            teacher_only_cost_per_episode=teacher.cost_per_episode,
            our_cost_per_episode=ours.cost_per_episode,
            saving_per_episode=teacher.cost_per_episode - ours.cost_per_episode,
            episodes=break_even_episodes(
                collect.total_cost, teacher.cost_per_episode, ours.cost_per_episode
            ),
        )

    break_even_episodes = staticmethod(break_even_episodes)


