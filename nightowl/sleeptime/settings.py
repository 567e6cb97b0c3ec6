"""Configuration of sleep-time compute and its workers.

Read from constructor arguments, then environment variables prefixed
``NIGHTOWL_SLEEP_`` (e.g. ``NIGHTOWL_SLEEP_MODEL=vllm-local``,
``NIGHTOWL_SLEEP_PROBE=prometheus``, ``NIGHTOWL_SLEEP_PROBE_URL=http://127.0.0.1:8000/metrics``),
then the defaults below. The database and the broker come from the main `Settings`
(``NIGHTOWL_DATABASE_URL``, ``NIGHTOWL_BROKER_URL``).
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from nightowl.errors import ConfigError

ProbeKind = Literal["none", "prometheus", "nvidia-smi"]


class GeneratorConfig(BaseModel):
    """What determines a learned context besides the context itself.

    Its hash is part of the idempotency key: two jobs with the same context content
    and the same generator config store one learned context.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = "smollm2"
    max_rounds: int = Field(3, ge=1, le=50)
    round_max_tokens: int = Field(256, ge=8)
    token_budget: int = Field(2048, ge=8, description="completion tokens over all rounds")
    drafts: int = Field(1, ge=1, le=16, description="parallel first drafts, merged when > 1")
    temperature: float = Field(0.0, ge=0.0)
    seed: int | None = 0

    def config_hash(self) -> str:
        """Stable sha256 of the canonical JSON of this config."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()


class SleepSettings(BaseSettings):
    """Sleep-time and worker settings (env prefix ``NIGHTOWL_SLEEP_``)."""

    model_config = SettingsConfigDict(env_prefix="NIGHTOWL_SLEEP_", extra="ignore")

    model: str = Field("smollm2", description="registry name of the model that thinks ahead")
    answer_model: str | None = Field(None, description="model answering queries (default: model)")
    max_rounds: int = Field(3, ge=1, le=50)
    round_max_tokens: int = Field(256, ge=8)
    token_budget: int = Field(2048, ge=8)
    drafts: int = Field(1, ge=1, le=16)
    temperature: float = Field(0.0, ge=0.0)
    seed: int | None = 0
    refresh_after_changes: int = Field(
        3, ge=1, description="refresh a stale c' once the context changed this many times"
    )
    idle_refresh_s: float = Field(
        300.0, ge=0, description="...or once the context has been quiet this long"
    )
    probe: ProbeKind = Field("none", description="idle probe: none = always idle")
    probe_url: str = "http://127.0.0.1:8000/metrics"
    probe_quiet_s: float = Field(30.0, ge=0, description="serving must be idle this long")
    probe_gpu_util_max: float = Field(10.0, ge=0, le=100)
    busy_countdown_s: float = Field(30.0, ge=0.1, description="re-queue delay when busy")
    lease_s: float = Field(
        120.0, ge=1, description="a running job whose heartbeat is older is presumed dead"
    )
    visibility_timeout_s: int = Field(
        3600, ge=1, description="Redis visibility timeout; must exceed the longest job"
    )
    task_soft_time_limit_s: float = Field(
        1800.0, gt=0, description="every worker task: SoftTimeLimitExceeded after this long"
    )
    task_time_limit_s: float = Field(
        1900.0, gt=0, description="every worker task: its process is killed after this long"
    )
    max_retries: int = Field(3, ge=0, description="retries of a failing job (busy never counts)")
    scan_interval_s: float = Field(60.0, ge=1, description="beat: how often to look for work")

    @model_validator(mode="after")
    def _limits_ordered(self) -> SleepSettings:
        if self.task_soft_time_limit_s >= self.task_time_limit_s:
            raise ValueError(
                "task_soft_time_limit_s must be below task_time_limit_s (the soft limit "
                "lets a task clean up before the hard one kills it)"
            )
        return self

    def generator(self, **overrides: object) -> GeneratorConfig:
        """The generator config these settings describe (with overrides)."""
        fields = {
            "model": self.model,
            "max_rounds": self.max_rounds,
            "round_max_tokens": self.round_max_tokens,
            "token_budget": self.token_budget,
            "drafts": self.drafts,
            "temperature": self.temperature,
            "seed": self.seed,
        }
        fields.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return GeneratorConfig(**fields)  # type: ignore[arg-type]
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ConfigError(
                f"bad sleep-time setting {'.'.join(map(str, first['loc']))}: {first['msg']}"
            ) from None


def load_sleep_settings(**overrides: object) -> SleepSettings:
    """Build `SleepSettings`, turning validation errors into one-line `ConfigError`s."""
    try:
        return SleepSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        raise ConfigError(
            f"bad sleep-time setting NIGHTOWL_SLEEP_{where.upper()}: {first['msg']}"
        ) from None
