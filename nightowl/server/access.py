"""The access log of `nightowl serve`: one line per HTTP request on ``nightowl.access``.

A line names the method, the path (as sent, percent-encoded, without the query string),
the API key's id (never the key: ``-`` when there is none or it was not accepted), the
status, the latency in milliseconds, the tier(s) that answered a chat completion
(``student``, ``teacher``, ``oracle``; ``-`` otherwise) and the client address::

    GET /v1/models status=200 ms=3.1 key=5f0c... tier=- client=127.0.0.1

The fields are also on the log record (``extra``: method, path, status, latency_ms,
key_id, tier, client) for structured handlers. The routes put ``key_id`` and ``tier``
into the request's ``scope["state"]`` (`note`); `nightowl.server.app.CountRequests`
writes the line when the response is done. It replaces uvicorn's access log, which
`nightowl serve` turns off.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

ACCESS_LOGGER = "nightowl.access"
ACCESS_FORMAT = "%(asctime)s %(name)s %(message)s"

log = logging.getLogger(ACCESS_LOGGER)


def note(state: Any, *, key_id: str | None = None, tiers: Iterable[str] = ()) -> None:
    """Record the key id and the answering tiers of a request for its access-log line.

    ``state`` is Starlette's ``request.state`` (backed by ``scope["state"]``).
    """
    if key_id is not None:
        state.key_id = key_id
    seen = list(dict.fromkeys(tiers))
    if seen:
        state.tier = ",".join(seen)


def _safe(text: str) -> str:
    """``text`` with control characters and spaces escaped (one line, one field)."""
    return "".join(c if c.isprintable() and c != " " else f"\\x{ord(c):02x}" for c in text)


def log_access(
    scope: MutableMapping[str, Any], status: int, latency_s: float, *, logger: logging.Logger = log
) -> None:
    """Write the access-log line of a finished request."""
    if not logger.isEnabledFor(logging.INFO):
        return
    state = scope.get("state") or {}
    method = _safe(str(scope.get("method", "-")))
    raw = scope.get("raw_path")  # the path as the client sent it
    path = raw.decode("latin-1") if isinstance(raw, bytes) else str(scope.get("path", ""))
    path = _safe(path.split("?", 1)[0])
    key_id = _safe(str(state.get("key_id") or "-"))
    tier = _safe(str(state.get("tier") or "-"))
    client = scope.get("client")
    host = _safe(str(client[0])) if client else "-"
    ms = round(latency_s * 1000, 1)
    logger.info(
        "%s %s status=%d ms=%.1f key=%s tier=%s client=%s",
        method, path, status, ms, key_id, tier, host,
        extra={"method": method, "path": path, "status": status, "latency_ms": ms,
               "key_id": key_id, "tier": tier, "client": host},
    )  # fmt: skip


def configure_access_log(enabled: bool = True, stream: TextIO | None = None) -> None:
    """Send ``nightowl.access`` lines to ``stream`` (stderr), or silence them.

    Used by `nightowl serve`; the logger does not propagate, so a root handler does not
    print each line twice.
    """
    logger = logging.getLogger(ACCESS_LOGGER)
    for handler in list(logger.handlers):
        if getattr(handler, "_nightowl_access", False):
            logger.removeHandler(handler)
    if not enabled:
        logger.setLevel(logging.WARNING)
        return
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter(ACCESS_FORMAT))
    handler._nightowl_access = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
