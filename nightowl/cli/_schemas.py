"""The JSON each reporting command prints with ``--json``: pydantic models, one per shape.

Most commands print a model the library already returns (`RunSummary`, `CollectResult`,
`CalibrationReport`, `RunReport`, ...); the few shapes that exist only at the CLI's edge
are defined here. `nightowl schema NAME` prints any of them as JSON Schema
(docs/json.md lists which command prints which).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter


class RunReportWithEpisodes(BaseModel):
    """`nightowl ledger show --json --episodes`: the run report plus every episode."""

    model_config = ConfigDict(ser_json_inf_nan="constants")

    report: dict[str, Any]
    episodes: list[dict[str, Any]]


class ContextRow(BaseModel):
    """One row of `nightowl sleep list --json`."""

    id: str
    name: str
    kind: str
    revision: int
    learned_status: str
    learned_version: int | None
    queries: int
    priority: float
    needs: str


class AnswerOut(BaseModel):
    """`nightowl sleep ask --json`."""

    text: str
    final: str
    used_learned: bool
    learned_status: str
    learned_id: int | None
    budget: str
    mode: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    query_id: int | None = None


class KeyRow(BaseModel):
    """One row of `nightowl keys list --json` (never the key itself)."""

    id: str
    prefix: str
    name: str
    tenant: str
    budget_usd: float | None
    spent_usd: float
    created_at: datetime
    revoked: bool


def schemas() -> dict[str, Any]:
    """Name -> pydantic model (or list of one) for every ``--json`` output."""
    from nightowl.app.calibrate import CalibrationReport
    from nightowl.app.collect import CollectResult
    from nightowl.app.info import Info
    from nightowl.app.runs import RunSummary
    from nightowl.ledger.metrics import RunReport

    return {
        "run": RunSummary,
        "collect": CollectResult,
        "calibrate": CalibrationReport,
        "info": Info,
        "ledger-show": RunReport,
        "ledger-show-episodes": RunReportWithEpisodes,
        "sleep-list": list[ContextRow],
        "sleep-ask": AnswerOut,
        "keys-list": list[KeyRow],
    }


def json_schema(name: str) -> dict[str, Any]:
    """The JSON Schema of one ``--json`` output, by command name."""
    from nightowl.errors import UnknownNameError

    known = schemas()
    if name not in known:
        raise UnknownNameError("schema", name, sorted(known))
    return TypeAdapter(known[name]).json_schema()
