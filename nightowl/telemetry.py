"""OpenTelemetry traces: run -> episode -> step -> model call / environment call.

Off by default, and free when off: nightowl depends only on ``opentelemetry-api``, whose
tracer is a no-op until a TracerProvider is installed. `setup_tracing` installs the SDK's
provider with a `BatchSpanProcessor` and an OTLP/HTTP exporter only when asked to:
``NIGHTOWL_TRACES=otlp``, or (the default ``auto``) the standard ``OTEL_TRACES_EXPORTER=otlp``
/ ``OTEL_EXPORTER_OTLP_ENDPOINT``. The SDK and the exporter are the ``traces`` extra.

Attributes follow the OpenTelemetry GenAI semantic conventions where one exists (plain
strings here: the semconv package is not a dependency) plus nightowl's own ``nightowl.*``.
docs/traces.md lists the span tree and every attribute.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import ProxyTracerProvider, Span, SpanKind, Status, StatusCode, Tracer

from nightowl.errors import MissingExtraError

if TYPE_CHECKING:
    from nightowl.config import Settings

log = logging.getLogger(__name__)

TRACER_NAME = "nightowl"

# --- GenAI semantic conventions (https://opentelemetry.io/docs/specs/semconv/gen-ai/) ----
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"  # replaces the deprecated gen_ai.system
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_TOOL_NAME = "gen_ai.tool.name"
ERROR_TYPE = "error.type"

# --- nightowl's own --------------------------------------------------------------------
RUN_ID = "nightowl.run_id"
EPISODE_ID = "nightowl.episode_id"
STEP = "nightowl.step"
TASK_ID = "nightowl.task_id"
ENV = "nightowl.env"
TIER = "nightowl.tier"
ROLE = "nightowl.role"
ACTOR = "nightowl.actor"
ACTION = "nightowl.action"
COST_USD = "nightowl.cost_usd"
DEMOS_RETRIEVED = "nightowl.demos.retrieved"
ACCEPTANCE_SIGNAL = "nightowl.acceptance.signal"
ACCEPTANCE_VERDICT = "nightowl.acceptance.verdict"
ACCEPTANCE_REASON = "nightowl.acceptance.reason"
ESCALATIONS = "nightowl.escalations"

#: a provider pushed by `use_provider` (tests, an embedding application); else the global one
_OVERRIDE: list[Any] = []
#: pid -> the provider `setup_tracing` installed in that process (once per process)
_INSTALLED: dict[int, Any] = {}
_GLOBAL_TRACER: Tracer = trace.get_tracer(TRACER_NAME)  # a proxy: follows the global provider


def tracer() -> Tracer:
    """The tracer of nightowl's spans (a no-op one while no SDK provider is installed)."""
    return _OVERRIDE[-1].get_tracer(TRACER_NAME) if _OVERRIDE else _GLOBAL_TRACER


@contextmanager
def use_provider(provider: Any) -> Iterator[None]:
    """Send nightowl's spans to ``provider`` inside the block (not the global provider)."""
    _OVERRIDE.append(provider)
    try:
        yield
    finally:
        _OVERRIDE.remove(provider)


def traces_mode(settings: Settings, environ: Mapping[str, str] | None = None) -> str | None:
    """``"otlp"`` when traces are to be exported, else None (the default)."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true" or settings.traces == "off":
        return None
    if settings.traces == "otlp":
        return "otlp"
    exporters = {e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "").split(",")}
    if exporters - {""}:
        return "otlp" if "otlp" in exporters else None
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    return "otlp" if endpoint else None


def setup_tracing(settings: Settings | None = None) -> bool:
    """Install the SDK TracerProvider with an OTLP exporter when configured; whether it is on.

    Once per process (a later call, or one in a forked child that inherited the provider,
    returns True at once). Without configuration nothing is imported or installed. The
    exporter reads the standard ``OTEL_EXPORTER_OTLP_*`` variables (default
    ``http://localhost:4318``); ``OTEL_SERVICE_NAME`` overrides the service name "nightowl".

    Raises:
        MissingExtraError: ``traces = "otlp"`` was asked for without the ``traces`` extra
            (when only ``OTEL_*`` variables ask, a warning is logged and traces stay off).
    """
    pid = os.getpid()
    if pid in _INSTALLED:
        return True
    if settings is None:
        from nightowl.config import get_settings

        settings = get_settings()
    if traces_mode(settings) is None:
        return False
    if not isinstance(trace.get_tracer_provider(), ProxyTracerProvider):
        _INSTALLED[pid] = trace.get_tracer_provider()  # inherited across fork, or the host's
        return True
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        err = MissingExtraError("OTLP traces", "traces", "opentelemetry-exporter-otlp-proto-http")
        if settings.traces == "otlp":
            raise err from None
        log.warning("OTEL_* asks for traces, but %s", err)
        return False
    name = os.environ.get("OTEL_SERVICE_NAME") or "nightowl"
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _INSTALLED[pid] = provider
    return True


# --- span helpers ------------------------------------------------------------------------
@contextmanager
def span(
    name: str,
    attributes: Mapping[str, Any] | None = None,
    *,
    parent: Span | None = None,
) -> Iterator[Span]:
    """A span, current inside the block (child of ``parent`` when given, else of the current).

    An exception leaving the block is recorded and sets the status to error.
    """
    ctx = trace.set_span_in_context(parent) if parent is not None else None
    with tracer().start_as_current_span(name, context=ctx, attributes=_clean(attributes)) as sp:
        yield sp


def current_span() -> Span:
    """The current span (a non-recording one when there is none)."""
    return trace.get_current_span()


def set_attributes(sp: Span, attributes: Mapping[str, Any]) -> None:
    """Set attributes (None values dropped) when ``sp`` records; nothing when tracing is off."""
    if sp.is_recording():
        sp.set_attributes(_clean(attributes) or {})


def model_call_span(
    *,
    model: str,
    operation: str,
    provider: str | None,
    role: str,
    run_id: str,
    episode_id: str | None,
    step: int | None,
    input_tokens: int,
    output_tokens: int,
    cost_usd: float,
    latency_s: float,
    ok: bool = True,
    error: str | None = None,
) -> None:
    """One finished model call as a CLIENT span ending now, started ``latency_s`` ago."""
    t = tracer()
    end = time.time_ns()
    sp = t.start_span(
        f"{operation} {model}", kind=SpanKind.CLIENT,
        start_time=end - max(0, int(latency_s * 1e9)),
    )
    if sp.is_recording():
        sp.set_attributes(_clean({
            GEN_AI_OPERATION_NAME: operation,
            GEN_AI_PROVIDER_NAME: provider,
            GEN_AI_REQUEST_MODEL: model,
            GEN_AI_RESPONSE_MODEL: model,
            GEN_AI_USAGE_INPUT_TOKENS: input_tokens,
            GEN_AI_USAGE_OUTPUT_TOKENS: output_tokens,
            TIER: role,
            ROLE: role,
            COST_USD: cost_usd,
            RUN_ID: run_id or None,
            EPISODE_ID: episode_id,
            STEP: step,
        }) or {})
        if not ok:
            sp.set_attribute(ERROR_TYPE, (error or "error").split(":")[0])
            sp.set_status(Status(StatusCode.ERROR, error))
    sp.end(end_time=end)


def _clean(attributes: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not attributes:
        return None
    return {k: v for k, v in attributes.items() if v is not None}

