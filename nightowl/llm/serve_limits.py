"""Limits shared by both HTTP servers (`nightowl serve`, `nightowl models serve`).

`ServeLimits` holds the request bounds (``n``, ``max_tokens``, messages, prompt size,
body size) and the admission limits (per key, per tenant, whole server), read from
``NIGHTOWL_SERVE_*`` environment variables with the defaults below; command-line flags
override single fields. `Admission` applies the admission limits: a moving-window rate
per key and per tenant (the maintained `limits` library) and concurrency counters per
key, per tenant and in total, so one key cannot take every slot of a server.
`ErrorIds` turns an unexpected exception into a generic 5xx body that names an error
id, and logs the same id with the traceback, so no internal message or file path ever
leaves the server.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Protocol, TypeVar

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from nightowl.errors import ConfigError, NightowlError, UserError

log = logging.getLogger("nightowl.serve")


class ServeLimits(BaseSettings):
    """Bounds and admission limits of a server (env prefix ``NIGHTOWL_SERVE_``)."""

    model_config = SettingsConfigDict(env_prefix="NIGHTOWL_SERVE_", extra="ignore")

    max_body_bytes: int = Field(1_000_000, ge=1024, le=1 << 30)
    max_prompt_chars: int = Field(32_000, ge=100, description="all messages / prompts together")
    max_messages: int = Field(256, ge=1)
    max_prompts: int = Field(32, ge=1, description="prompts in one /v1/completions request")
    max_n: int = Field(8, ge=1, le=128)
    max_tokens: int = Field(4096, ge=1)
    max_concurrency: int = Field(8, ge=1, description="requests in flight, whole server")
    key_concurrency: int = Field(4, ge=1, description="requests in flight per key")
    tenant_concurrency: int = Field(6, ge=1, description="requests in flight per tenant")
    key_rate: str = Field("20/second", description="requests per key ('N/second|minute|hour')")
    tenant_rate: str = Field("40/second", description="requests per tenant")
    retry_after_s: int = Field(2, ge=1)
    metrics_public: bool = Field(False, description="serve /metrics without a key")

    @field_validator("key_rate", "tenant_rate")
    @classmethod
    def _rate(cls, value: str) -> str:
        try:
            parse(value)
        except ValueError:
            raise ValueError(f"not a rate: {value!r} (e.g. '20/second', '600/minute')") from None
        return value


def load_limits(**overrides: Any) -> ServeLimits:
    """`ServeLimits` from the environment, with the non-None ``overrides`` on top.

    Invalid values become a one-line `ConfigError`.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return ServeLimits(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise ConfigError(f"serve limit {where}: {first.get('msg')}") from None


class _Sized(Protocol):
    def prompt_chars(self) -> int: ...


M = TypeVar("M", bound=BaseModel)


def bounded(base: type[M], limits: ServeLimits) -> type[M]:
    """``base`` (a request body model) with the upper bounds of ``limits`` in its schema.

    Overrides ``n``, ``max_tokens``, ``max_completion_tokens``, ``messages``, ``prompt``
    and ``seed`` where ``base`` has them, so the bounds are checked by pydantic and show
    in the OpenAPI schema; the prompt size (``base.prompt_chars()``) is checked after.
    """
    fields = base.model_fields
    over: dict[str, Any] = {}
    if "n" in fields:
        over["n"] = (int, Field(1, ge=1, le=limits.max_n))
    for name in ("max_tokens", "max_completion_tokens"):
        if name in fields:
            over[name] = (int | None, Field(None, ge=1, le=limits.max_tokens))
    if "messages" in fields:
        over["messages"] = (
            fields["messages"].annotation,
            Field(min_length=1, max_length=limits.max_messages),
        )
    if "prompt" in fields:
        many = Annotated[list[str], Field(min_length=1, max_length=limits.max_prompts)]
        over["prompt"] = (str | many, ...)
    if "stop" in fields:
        over["stop"] = (str | Annotated[list[str], Field(max_length=4)] | None, None)
    if "seed" in fields:
        over["seed"] = (int | None, Field(None, ge=0, le=2**63 - 1))
    cap = limits.max_prompt_chars

    def _size(self: _Sized) -> _Sized:
        size = self.prompt_chars()
        if size > cap:
            raise ValueError(f"prompt has {size} characters; this server accepts at most {cap}")
        return self

    model: type[M] = create_model(  # type: ignore[call-overload]
        base.__name__,
        __base__=base,
        __module__=base.__module__,
        __validators__={"_size": model_validator(mode="after")(_size)},  # type: ignore[dict-item]
        **over,
    )
    return model


class OverloadedError(NightowlError):
    """Over a rate or concurrency limit (HTTP 429 with ``Retry-After``)."""

    def __init__(self, message: str, retry_after_s: int = 2) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)


class Admission:
    """Per-key and per-tenant rate and concurrency limits, plus a server-wide cap.

    The rate check (`check_rate`) is cheap and runs before the key is looked up in SQL,
    keyed by a hash of the bearer token, so a key flooding the server is turned away
    without database work; the concurrency slots (`slot`) are taken after
    authentication, when the key's tenant is known. Single event loop: no locks needed.
    """

    def __init__(self, limits: ServeLimits) -> None:
        self.limits = limits
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._key_rate: RateLimitItem = parse(limits.key_rate)
        self._tenant_rate: RateLimitItem = parse(limits.tenant_rate)
        self._keys: Counter[str] = Counter()
        self._tenants: Counter[str] = Counter()
        self.in_flight = 0

    def _hit(self, item: RateLimitItem, scope: str, who: str, what: str) -> None:
        if self._limiter.hit(item, scope, who):
            return
        reset = self._limiter.get_window_stats(item, scope, who).reset_time
        wait = max(1, min(3600, int(reset - time.time() + 0.999)))
        raise OverloadedError(f"rate limit of {what} reached ({item}); retry after {wait}s", wait)

    def check_rate(self, key: str) -> None:
        """Count one request of ``key`` (a token hash or a client address)."""
        self._hit(self._key_rate, "key", key, "this key")

    def check_tenant_rate(self, tenant: str) -> None:
        """Count one request of ``tenant``."""
        self._hit(self._tenant_rate, "tenant", tenant, f"tenant {tenant!r}")

    @contextmanager
    def slot(self, key: str, tenant: str) -> Iterator[None]:
        """Hold a concurrency slot of ``key`` and ``tenant``, or raise `OverloadedError`."""
        lim, wait = self.limits, self.limits.retry_after_s
        for who, count, limit in (
            ("this key has", self._keys[key], lim.key_concurrency),
            (f"tenant {tenant!r} has", self._tenants[tenant], lim.tenant_concurrency),
            ("server busy:", self.in_flight, lim.max_concurrency),
        ):
            if count >= limit:
                raise OverloadedError(
                    f"{who} {count} requests in flight (limit {limit}); retry after {wait}s", wait
                )
        self._keys[key] += 1
        self._tenants[tenant] += 1
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            for counter, name in ((self._keys, key), (self._tenants, tenant)):
                counter[name] -= 1
                if counter[name] <= 0:
                    del counter[name]


def internal_error(exc: BaseException, where: str) -> str:
    """Log ``exc`` with its traceback under a new error id; return the client's message."""
    eid = uuid.uuid4().hex[:12]  # ties the 5xx body to its server log line
    log.error("error %s in %s: %s: %s", eid, where, type(exc).__name__, exc, exc_info=exc)
    return f"internal server error (error id {eid}); the server log has the details"


_PATH = re.compile(r"(?<![\w:/.])(?:~|\.{1,2})?(?:/[\w.@+-]+){2,}/?")


def public_message(text: str, limit: int = 300) -> str:
    """A client-safe one-line message: first line, file paths replaced, length capped."""
    line = (text.strip().splitlines() or [""])[0]
    return _PATH.sub("<path>", line)[:limit]


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost`` (a name that resolves to loopback)."""
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, *, has_keys: bool, insecure: bool) -> None:
    """Refuse to serve a non-loopback address without keys unless ``insecure``."""
    if has_keys or insecure or is_loopback(host):
        return
    raise UserError(
        f"refusing to serve on {host} without API keys (anyone who can reach it could use "
        "the model): require keys (`nightowl keys create`), or pass --insecure-bind"
    )
