"""The ``sleep`` section of the settings: sleep-time compute and its workers.

`SleepConfig` is ``Settings.sleep`` (`nightowl.config`): set it with environment variables
``NIGHTOWL_SLEEP__<FIELD>`` (e.g. ``NIGHTOWL_SLEEP__MODEL=vllm-local``,
``NIGHTOWL_SLEEP__PROBE=prometheus``, ``NIGHTOWL_SLEEP__PROBE_URL=http://127.0.0.1:8000/metrics``)
or a ``[sleep]`` table in the project's ``nightowl.toml``. The database and the broker are
top-level settings (``NIGHTOWL_DATABASE_URL``, ``NIGHTOWL_BROKER_URL``).

`GeneratorConfig` (what determines a learned context besides the context itself) lives
here too, one layer below ``nightowl.config``, so that `SleepConfig.generator` can build
it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from nightowl.errors import ConfigError

ProbeKind = Literal["none", "prometheus", "nvidia-smi"]

#: the environment variable prefix of this section (``Settings`` prefix + field + ``__``)
ENV_PREFIX = "NIGHTOWL_SLEEP__"


class _GeneratorFields(BaseModel):
    """The fields of a generator config, written once for `GeneratorConfig` and `SleepConfig`."""

    model: str = Field("smollm2", description="registry name of the model that thinks ahead")
    max_rounds: int = Field(3, ge=1, le=50)
    round_max_tokens: int = Field(256, ge=8)
    token_budget: int = Field(2048, ge=8, description="completion tokens over all rounds")
    drafts: int = Field(1, ge=1, le=16, description="parallel first drafts, merged when > 1")
    temperature: float = Field(0.0, ge=0.0)
    seed: int | None = 0


class GeneratorConfig(_GeneratorFields):
    """What determines a learned context besides the context itself.

    Its hash is part of the idempotency key: two jobs with the same context content
    and the same generator config store one learned context.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    def config_hash(self) -> str:
        """Stable sha256 of the canonical JSON of this config."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()


class SleepConfig(_GeneratorFields):
    """Sleep-time and worker settings (``Settings.sleep``; env ``NIGHTOWL_SLEEP__<FIELD>``)."""

    model_config = ConfigDict(extra="forbid")

    answer_model: str | None = Field(None, description="model answering queries (default: model)")
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
    def _limits_ordered(self) -> SleepConfig:
        if self.task_soft_time_limit_s >= self.task_time_limit_s:
            raise ValueError(
                f"{ENV_PREFIX}TASK_SOFT_TIME_LIMIT_S ({self.task_soft_time_limit_s:g}) must be "
                f"below {ENV_PREFIX}TASK_TIME_LIMIT_S ({self.task_time_limit_s:g}): the soft "
                "limit lets a task clean up before the hard one kills it"
            )
        return self

    def generator(self, **overrides: object) -> GeneratorConfig:
        """The generator config these settings describe (with overrides)."""
        fields = self.model_dump(include=set(_GeneratorFields.model_fields))
        fields.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return GeneratorConfig(**fields)  # type: ignore[arg-type]
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ConfigError(
                f"bad sleep-time setting {'.'.join(map(str, first['loc']))}: {first['msg']}"
            ) from None
