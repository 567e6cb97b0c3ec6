"""`Ledger`: records runs, episodes, model and tool calls (reads in `_reports`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, insert, update
from sqlalchemy.orm import Session

from nightowl.config import Prices
from nightowl.errors import UnknownNameError
from nightowl.ledger._reports import LedgerReads
from nightowl.ledger.tables import Episode, ModelCall, Run, ToolCall, _jsonable, _new_id
from nightowl.llm.base import Usage
from nightowl.storage import Database, utcnow


class Ledger(LedgerReads):
    """Records runs, episodes, model calls and tool calls; computes cost metrics."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # runs and episodes
    def start_run(
        self,
        name: str,
        kind: str = "",
        config: Any = None,
        *,
        run_id: str | None = None,
    ) -> str:
        """Create a run; returns its id (a uuid4 hex string)."""
        rid = run_id or _new_id()
        row = Run(id=rid, name=name, kind=kind, config=_jsonable(config), created_at=utcnow())
        self.db.write(lambda s: s.add(row))
        return rid

    def start_episode(
        self,
        run_id: str,
        task_id: str,
        env: str = "",
        split: str = "",
        *,
        episode_id: str | None = None,
        extra: Callable[[Session], Any] | None = None,
    ) -> str:
        """Create a running episode; returns its id (a uuid4 hex string).

        ``extra(session)`` runs in the same transaction (a lease fence).
        """
        eid = episode_id or _new_id()
        row = Episode(
            id=eid,
            run_id=run_id,
            task_id=task_id,
            env=env,
            split=split,
            status="running",
            n_steps=0,
            started_at=utcnow(),
        )
        def _do(s: Session) -> None:
            s.add(row)
            if extra is not None:
                s.flush()
                extra(s)

        self._write_fk(_do, run_id=run_id)
        return eid

    def finish_episode(
        self,
        episode_id: str,
        success: bool,
        score: float | None = None,
        n_steps: int = 0,
        reason: str | None = None,
        *,
        status: str = "done",
        extra: Callable[[Session], Any] | None = None,
    ) -> None:
        """Record an episode's outcome (``status`` e.g. "done", "failed", "aborted").

        ``extra(session)`` runs in the same transaction (a lease fence).
        """
        values = {
            "status": status,
            "success": bool(success),
            "score": None if score is None else float(score),
            "n_steps": int(n_steps),
            "reason": reason,
            "ended_at": utcnow(),
        }

        def _do(s: Session) -> int:
            if extra is not None:
                extra(s)
            res = s.execute(update(Episode).where(Episode.id == episode_id).values(**values))
            return int(res.rowcount or 0)  # type: ignore[attr-defined]

        if self.db.write(_do) == 0:
            raise UnknownNameError("episode", episode_id)

    def delete_run(self, run_id: str) -> None:
        """Delete a run and (by cascade) its episodes and calls."""

        def _do(s: Session) -> None:
            s.execute(delete(ModelCall).where(ModelCall.run_id == run_id))
            s.execute(delete(ToolCall).where(ToolCall.run_id == run_id))
            s.execute(delete(Run).where(Run.id == run_id))

        self.db.write(_do)

    # calls
    def model_call_values(
        self,
        *,
        run_id: str,
        episode_id: str | None = None,
        step: int | None = None,
        role: str,
        model: str,
        usage: Usage,
        latency_s: float,
        prices: Prices,
        meta: dict[str, Any] | None = None,
        kind: str = "generate",
        ok: bool = True,
    ) -> dict[str, Any]:
        """The column values of one model call, priced (``prices`` per 1M tokens)."""
        cost = prices.cost(
            usage.prompt_tokens, usage.cached_prompt_tokens, usage.completion_tokens
        )
        meta = dict(meta or {})
        ok = ok and not meta.get("error")
        return {
            "run_id": run_id,
            "episode_id": episode_id,
            "step": step,
            "role": role,
            "kind": kind,
            "model": model,
            "prompt_tokens": int(usage.prompt_tokens),
            "cached_prompt_tokens": int(usage.cached_prompt_tokens),
            "completion_tokens": int(usage.completion_tokens),
            "latency_s": float(latency_s),
            "cost_usd": cost,
            "ok": ok,
            "meta": _jsonable(meta) or None,
            "created_at": utcnow(),
        }

    def record_model_call(self, **kw: Any) -> float:
        """Record one model call (arguments of `model_call_values`); its cost in USD."""
        values = self.model_call_values(**kw)
        self.write_rows([(ModelCall, values)])
        return float(values["cost_usd"])

    def tool_call_values(
        self,
        *,
        run_id: str,
        episode_id: str | None = None,
        step: int | None = None,
        tool: str,
        latency_s: float,
        cost: float = 0.0,
        meta: dict[str, Any] | None = None,
        ok: bool = True,
    ) -> dict[str, Any]:
        """The column values of one tool/environment call."""
        meta = dict(meta or {})
        ok = ok and not meta.get("error")
        return {
            "run_id": run_id,
            "episode_id": episode_id,
            "step": step,
            "tool": tool,
            "latency_s": float(latency_s),
            "cost_usd": float(cost),
            "ok": ok,
            "meta": _jsonable(meta) or None,
            "created_at": utcnow(),
        }

    def record_tool_call(self, **kw: Any) -> float:
        """Record one tool/environment call (arguments of `tool_call_values`); its cost."""
        values = self.tool_call_values(**kw)
        self.write_rows([(ToolCall, values)])
        return float(values["cost_usd"])

    def write_rows(self, rows: list[tuple[Any, dict[str, Any]]], extra: Any = None) -> None:
        """Write ``(table class, values)`` rows, and ``extra(session)``, in one transaction.

        Core ``INSERT``s, one statement per table (no ORM unit of work): this is the
        agent loop's per-step write, so it is kept to the few statements it needs.
        """
        if not rows and extra is None:
            return
        by_table: dict[Any, list[dict[str, Any]]] = {}
        for table, values in rows:
            by_table.setdefault(table, []).append(values)
        run_id = next((v["run_id"] for _, v in rows), "")
        episode_id = next((v["episode_id"] for _, v in rows if v.get("episode_id")), None)

        def _do(s: Session) -> None:
            for table, values in by_table.items():
                s.execute(insert(table.__table__), values)  # Core, not ORM bulk
            if extra is not None:
                extra(s)

        self._write_fk(_do, run_id=run_id, episode_id=episode_id)

    def _write_fk(self, fn: Any, *, run_id: str, episode_id: str | None = None) -> None:
        """Write, turning a foreign-key violation into an `UnknownNameError`."""
        from sqlalchemy.exc import IntegrityError

        try:
            self.db.write(fn)
        except IntegrityError as exc:
            if "foreign" not in str(exc.orig).lower():
                raise
            if not self.run_exists(run_id):
                raise UnknownNameError("run", run_id) from None
            raise UnknownNameError("episode", episode_id or "?") from None
