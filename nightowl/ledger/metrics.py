"""Cost formulas and the pydantic reports `Ledger` returns (definitions: docs/storage.md)."""

from __future__ import annotations

import math
from datetime import datetime

from pydantic import BaseModel, ConfigDict

#: roles whose ``generate`` calls choose actions; the teacher-call share is over these
ACTING_ROLES: tuple[str, ...] = ("student", "teacher")
TEACHER_ROLE = "teacher"
#: actors (recorded in an environment step's ``meta["actor"]``) that count as the teacher
TEACHER_ACTORS: tuple[str, ...] = ("teacher", "oracle")
#: tool-name prefix of the agent loop's environment steps (``env:<env name>``)
ENV_TOOL_PREFIX = "env:"
#: episode status of an infrastructure error (the environment or a model backend failed):
#: not a loss, so out of success rate, cost per episode and cost-of-pass
ERROR_STATUS = "error"


def teacher_share(teacher_steps: int, env_steps: int) -> float:
    """THE teacher share: environment steps the teacher acted on / environment steps.

    A step counts as the teacher's when a teacher tier ("teacher" or the "oracle")
    chose its action; student, search and fallback steps do not. 0 with no steps.
    """
    return teacher_steps / env_steps if env_steps else 0.0

def cost_of_pass(cost_per_episode: float, success_rate: float) -> float:
    """Expected cost of one success: cost per episode / success rate (inf at zero)."""
    if success_rate <= 0:
        return math.inf
    return cost_per_episode / success_rate


def break_even_episodes(
    collection_cost: float, teacher_only_cost_per_episode: float, our_cost_per_episode: float
) -> float:
    """Episodes after which a one-off demo-collection cost has paid for itself.

    ``n* = collection_cost / (teacher_only_cost_per_episode - our_cost_per_episode)``;
    infinite when we are not cheaper per episode, 0 when collection was free.
    """
    saving = teacher_only_cost_per_episode - our_cost_per_episode
    if saving <= 0:
        return math.inf
    return max(collection_cost, 0.0) / saving



class RoleStats(BaseModel):
    """Calls, tokens and cost of one role in one run."""

    role: str
    calls: int = 0
    generate_calls: int = 0
    score_calls: int = 0
    failed_calls: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0


class LeaseView(BaseModel):
    """One episode of a distributed run as its lease shows it (`RunReport.in_flight`...)."""

    task_id: str
    state: str
    host: str | None = None
    pid: int | None = None
    step: int = 0
    attempt: int = 0
    requeues: int = 0
    heartbeat_age_s: float | None = None
    reason: str | None = None


class RunReport(BaseModel):
    """Aggregates of one run (definitions in docs/storage.md)."""

    model_config = ConfigDict(ser_json_inf_nan="constants")

    run_id: str
    name: str
    kind: str
    created_at: datetime
    n_episodes: int
    n_finished: int
    successes: int
    success_rate: float
    model_cost: float
    tool_cost: float
    total_cost: float
    overhead_cost: float
    cost_per_episode: float
    cost_of_pass: float
    model_calls: int
    failed_model_calls: int
    tool_calls: int
    teacher_calls: int
    acting_calls: int
    teacher_call_share: float
    env_steps: int = 0
    teacher_steps: int = 0
    teacher_share: float = 0.0
    prompt_tokens: int
    cached_prompt_tokens: int
    completion_tokens: int
    roles: dict[str, RoleStats]
    models: dict[str, float]
    wall_time_s: float
    #: episodes the run was started with (its task list), when known; ``n_episodes``
    #: counts only those that have started
    n_planned: int | None = None
    #: distributed runs: episodes running now (worker, step, heartbeat age) ...
    in_flight: list[LeaseView] = []
    #: ... waiting on the broker ...
    queued: int = 0
    #: ... re-queued at least once (and why) ...
    requeued: list[LeaseView] = []
    #: ... and given up as infrastructure failures
    failed: list[LeaseView] = []
    #: episodes that ended on an infrastructure error (status "error"): counted in
    #: ``n_episodes`` and ``total_cost``, left out of success rate, cost per episode and
    #: cost-of-pass; ``error_reasons`` counts them per reason, ``error_cost`` is their cost
    errors: int = 0
    error_reasons: dict[str, int] = {}
    error_cost: float = 0.0

    @property
    def progress(self) -> str:
        """``"9 of 10 finished"`` (or ``"10 finished"`` when nothing is missing)."""
        total = max(self.n_planned or 0, self.n_episodes)
        if self.n_finished >= total:
            return f"{self.n_finished} finished"
        return f"{self.n_finished} of {total} finished"

    @property
    def calls_per_role(self) -> dict[str, int]:
        """Number of model calls per role."""
        return {r: s.calls for r, s in self.roles.items()}

    @property
    def cost_per_role(self) -> dict[str, float]:
        """Model cost (USD) per role."""
        return {r: s.cost_usd for r, s in self.roles.items()}

    @property
    def tokens_per_role(self) -> dict[str, int]:
        """Prompt + completion tokens per role."""
        return {r: s.prompt_tokens + s.completion_tokens for r, s in self.roles.items()}


class EpisodeCost(BaseModel):
    """Cost and outcome of one episode."""

    episode_id: str
    task_id: str
    env: str
    split: str
    status: str
    success: bool | None
    score: float | None
    n_steps: int
    model_calls: int
    teacher_calls: int
    student_calls: int
    prompt_tokens: int
    completion_tokens: int
    model_cost: float
    tool_calls: int
    tool_cost: float
    cost_usd: float


class RunSummary(BaseModel):
    """One line of `Ledger.list_runs`."""

    run_id: str
    name: str
    kind: str
    created_at: datetime
    n_episodes: int
    successes: int
    total_cost: float


class BreakEven(BaseModel):
    """`break_even_episodes` computed from three recorded runs."""

    model_config = ConfigDict(ser_json_inf_nan="constants")

    collection_run: str
    teacher_only_run: str
    our_run: str
    collection_cost: float
    teacher_only_cost_per_episode: float
    our_cost_per_episode: float
    saving_per_episode: float
    episodes: float
