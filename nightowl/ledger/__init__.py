"""The cost ledger: every model call and tool call of every run, in SQL.

Tables (on `nightowl.db.Base`, created by migration ``0001``):

- ``runs``: one row per run (an evaluation, a demo collection, a sleep pass, ...).
- ``episodes``: one row per episode of a run (task, env, split, outcome).
- ``model_calls``: one row per model call (role, model, tokens, latency, cost), failed
  calls included (``ok`` false, ``meta["error"]``). ``kind`` is ``"generate"`` or
  ``"score"`` (log-probability scoring).
- ``tool_calls``: one row per tool/environment call with an optional price.
- ``episode_leases``: who runs which episode of a distributed run (migration
  ``0005_leases``; `LeaseStore`, `FencedLedger`).

Writes are short transactions that retry when SQLite is busy, so several threads,
asyncio tasks (through `MeteredModel`, which writes from a worker thread) and
processes can record into one database at once.

Metrics (see docs/storage.md for the formulas): total cost, cost per episode,
cost-of-pass (expected cost per episode / success rate; infinite at zero success),
the **teacher share** (``teacher_share``: environment steps whose action a teacher tier
chose / environment steps; the one definition every report uses), the teacher-call
share (``teacher_call_share``: teacher ``generate`` calls / acting ``generate`` calls,
acting roles being ``student`` and ``teacher``; a cost diagnostic, not the teacher
share), and `break_even_episodes`.

Metering: `MeteredModel` bound to a `CallSite` (run, episode, step, role); the agent loop
queues a step's rows in a `PendingWrites` and writes them in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence

from nightowl.ledger._core import Ledger
from nightowl.ledger.fenced import FencedLedger
from nightowl.ledger.leases import EpisodeLease, Holder, LeaseLostError, LeaseRow, LeaseStore
from nightowl.ledger.metered import MeteredModel, as_metered
from nightowl.ledger.metrics import (
    ACTING_ROLES,
    ENV_TOOL_PREFIX,
    TEACHER_ACTORS,
    TEACHER_ROLE,
    BreakEven,
    EpisodeCost,
    RoleStats,
    RunReport,
    RunSummary,
    break_even_episodes,
    cost_of_pass,
    teacher_share,
)
from nightowl.ledger.pending import CallSite, PendingWrites
from nightowl.ledger.tables import Episode, ModelCall, Run, ToolCall

__all__: Sequence[str] = (
    "ACTING_ROLES",
    "ENV_TOOL_PREFIX",
    "TEACHER_ACTORS",
    "TEACHER_ROLE",
    "BreakEven",
    "CallSite",
    "Episode",
    "EpisodeCost",
    "EpisodeLease",
    "FencedLedger",
    "Holder",
    "LeaseLostError",
    "LeaseRow",
    "LeaseStore",
    "Ledger",
    "MeteredModel",
    "ModelCall",
    "PendingWrites",
    "RoleStats",
    "Run",
    "RunReport",
    "RunSummary",
    "ToolCall",
    "break_even_episodes",
    "as_metered",
    "cost_of_pass",
    "teacher_share",
)

