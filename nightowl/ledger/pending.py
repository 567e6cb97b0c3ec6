"""Where a model call happens (`CallSite`) and rows waiting to be written (`PendingWrites`).

The agent loop collects a step's ledger rows in a `PendingWrites` and writes them in one
transaction when the step's node ends (before its checkpoint), instead of one
transaction and one thread hop per call; a killed process loses at most the rows of the
node that was running, which is the node a resume runs again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nightowl.ledger.tables import ModelCall, ToolCall

if TYPE_CHECKING:
    from nightowl.ledger._core import Ledger


@dataclass
class PendingWrites:
    """Ledger rows, as ``(table class, column values)``, waiting for one transaction."""

    rows: list[tuple[Any, dict[str, Any]]] = field(default_factory=list)

    def model_call(self, ledger: Ledger, **kw: Any) -> float:
        """Queue a model call (same arguments as `Ledger.record_model_call`); its cost."""
        values = ledger.model_call_values(**kw)
        self.rows.append((ModelCall, values))
        return float(values["cost_usd"])

    def tool_call(self, ledger: Ledger, **kw: Any) -> float:
        """Queue a tool call (same arguments as `Ledger.record_tool_call`); its cost."""
        values = ledger.tool_call_values(**kw)
        self.rows.append((ToolCall, values))
        return float(values["cost_usd"])

    def take(self) -> list[tuple[Any, dict[str, Any]]]:
        """The queued rows, leaving the buffer empty."""
        rows, self.rows = self.rows, []
        return rows


@dataclass(frozen=True, kw_only=True)
class CallSite:
    """Where a model call is made, for the ledger.

    Attributes:
        run_id: the run ("" = keep the model's own).
        role: "student", "teacher", "critic", ... ("" = keep the model's own).
        episode_id: the episode, or None.
        step: the step within the episode, or None.
        pending: a buffer the rows go to instead of being written at once.
    """

    run_id: str = ""
    role: str = ""
    episode_id: str | None = None
    step: int | None = None
    pending: PendingWrites | None = field(default=None, compare=False)
