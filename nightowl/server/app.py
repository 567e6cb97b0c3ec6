"""`nightowl serve`: the FastAPI app (thin routes; logic in `ChatService`).

Routes: ``POST /v1/chat/completions``, ``GET /v1/models`` (bearer key required unless
disabled), ``GET /health``, ``GET /metrics`` (Prometheus text; a key is required too
unless ``NIGHTOWL_SERVE_METRICS_PUBLIC=1``). Every error is the OpenAI shape
``{"error": {"message", "type", "code"}}`` with a one-line message: 400 bad input or
unsupported field or over a bound, 401 bad key, 402 budget spent, 404 unknown model,
413 body too large, 429 over a rate or concurrency limit (with Retry-After), 5xx only
for server-side failures, and then with a generic message naming an error id that the
server log has with the traceback (no internal message or path reaches the client).
Every request gets one access-log line on ``nightowl.access`` (`nightowl.server.access`)
unless ``access_log=False``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from nightowl.errors import BudgetExceededError, NightowlError, StoreError, UserError
from nightowl.llm.openai_wire import sse_response
from nightowl.llm.serve_guard import SendWatch, error_json, validation_message
from nightowl.llm.serve_limits import internal_error, public_message
from nightowl.server.access import log_access, note
from nightowl.server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from nightowl.server.metrics import Metrics
from nightowl.server.service import (
    AuthError,
    ChatService,
    ClientGoneError,
    ModelNotFoundError,
    OverloadedError,
    TooLargeError,
)

_STATUS: list[tuple[type[BaseException], int, str]] = [
    (AuthError, 401, "authentication_error"),
    (BudgetExceededError, 402, "insufficient_quota"),
    (ModelNotFoundError, 404, "model_not_found"),
    (TooLargeError, 413, "invalid_request_error"),
    (OverloadedError, 429, "rate_limit_error"),
    (ClientGoneError, 499, "client_closed_request"),
    (UserError, 400, "invalid_request_error"),
    (StoreError, 503, "server_error"),
    (NightowlError, 502, "server_error"),
]


def error_response(exc: BaseException, retry_after: int = 2, where: str = "") -> JSONResponse:
    """The OpenAI-shaped error for ``exc``.

    4xx messages are the error's first line with file paths replaced; a 5xx says only
    "internal server error" with an error id, logged with the traceback (`internal_error`).
    """
    status, kind = next(
        ((code, name) for cls, code, name in _STATUS if isinstance(exc, cls)), (500, "server_error")
    )
    if status >= 500:
        message = internal_error(exc, where or "nightowl serve")
    else:
        message = public_message(str(exc)) or type(exc).__name__
    wait = getattr(exc, "retry_after_s", retry_after) if status == 429 else None
    return error_json(status, message, kind, retry_after=wait)


class CountRequests:
    """Pure ASGI middleware: /v1/ request metrics and every request's access-log line.

    It counts /v1/ requests by status with their latency, and writes one line per HTTP
    request to ``nightowl.access`` (`nightowl.server.access.log_access`).

    Pure ASGI rather than ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware
    hides the client's disconnect from ``request.is_disconnected()``, which the chat
    route needs to cancel abandoned generations. An exception that escaped a /v1/ route
    becomes a one-line 500 here, and the server keeps serving.
    """

    def __init__(
        self, app: ASGIApp, *, metrics: Metrics, retry_after: int, access_log: bool = True
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.retry_after = retry_after
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request through, recording its status and latency."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        counted = str(scope.get("path", "")).startswith("/v1/")
        scope.setdefault("state", {})  # the routes note the key id and tier here
        started = time.perf_counter()
        sent = SendWatch(send)
        try:
            await self.app(scope, receive, sent)
        except Exception as exc:  # noqa: BLE001 - last resort: one-line 500, keep serving
            if sent.status is not None or not counted:
                raise
            response = error_response(exc, self.retry_after, str(scope.get("path", "")))
            await response(scope, receive, sent)
        finally:
            status = 500 if sent.status is None else sent.status
            latency_s = time.perf_counter() - started
            if counted:
                self.metrics.request_done(status, latency_s)
            if self.access_log:
                log_access(scope, status, latency_s)


def create_app(service: ChatService, *, sleep: bool = False, access_log: bool = True) -> FastAPI:
    """The app over ``service``; ``sleep`` starts the idle-thread rethink loop.

    ``access_log`` writes one line per request to the ``nightowl.access`` logger.
    """

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if sleep:
            # Think only while no chat request is in flight (serving comes first).
            service.assistant.start_sleep(gate=lambda: service.admission.in_flight == 0)
        yield
        await service.assistant.aclose()
        service.metrics.close()

    app = FastAPI(title="nightowl serve", version="1", lifespan=lifespan)
    app.state.service = service
    limits = service.config.limits
    limit = limits.retry_after_s

    app.add_middleware(
        CountRequests, metrics=service.metrics, retry_after=limit, access_log=access_log
    )

    def client(request: Request) -> str:
        return request.client.host if request.client else "unknown"

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "in_flight": service.admission.in_flight}

    @app.get("/metrics", response_model=None)
    async def metrics(request: Request) -> Response:
        if not limits.metrics_public:
            try:
                key = await service.authenticate(request.headers.get("authorization"),
                                                 rate=False)  # fmt: skip
            except NightowlError as exc:
                return error_response(exc, limit, "/metrics")
            note(request.state, key_id=key.id if key is not None else None)
        return Response(service.metrics.render(), media_type=METRICS_CONTENT_TYPE)

    @app.get("/v1/models", response_model=None)
    async def models(request: Request) -> JSONResponse | dict[str, Any]:
        try:
            key = await service.authenticate(request.headers.get("authorization"),
                                             client=client(request))  # fmt: skip
        except NightowlError as exc:
            return error_response(exc, limit, "/v1/models")
        note(request.state, key_id=key.id if key is not None else None)
        return service.model_list().model_dump()

    @app.post("/v1/chat/completions", response_model=None,
              openapi_extra=_body_schema(app, service.request_model))  # fmt: skip
    async def chat(request: Request) -> Response | dict[str, Any]:
        try:
            key = await service.authenticate(request.headers.get("authorization"),
                                             client=client(request))  # fmt: skip
            note(request.state, key_id=key.id if key is not None else None)
            declared = request.headers.get("content-length")
            if declared and (not declared.isdigit() or int(declared) > limits.max_body_bytes):
                raise TooLargeError(
                    f"request body of {declared} bytes is over the "
                    f"{limits.max_body_bytes}-byte limit"
                )
            raw = await _read_limited(request, limits.max_body_bytes)
            try:
                body = service.request_model.model_validate_json(raw)
            except ValidationError as exc:
                raise UserError(validation_message(list(exc.errors()))) from None
            async with service.admitted(key, client(request)):
                answer = await service.complete(
                    body,
                    key=key,
                    thread_header=request.headers.get("x-nightowl-thread"),
                    disconnected=request.is_disconnected,
                )
        except NightowlError as exc:
            return error_response(exc, limit, "/v1/chat/completions")
        note(request.state, tiers=answer.tiers)
        if answer.events is not None:
            return sse_response(answer.events)
        return JSONResponse(answer.json)

    return app


def _body_schema(app: FastAPI, model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` publishing ``model`` as the JSON body of a route that reads raw.

    The chat route reads the body itself (to stop at the size limit), so FastAPI cannot
    see its model; this puts the model's schema, bounds included, into the OpenAPI
    document (nested models under ``components/schemas``) for clients and fuzzers.
    """
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    build = app.openapi

    def openapi() -> dict[str, Any]:
        doc = build()
        doc.setdefault("components", {}).setdefault("schemas", {}).update(defs)
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
    return {
        "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}
    }


async def _read_limited(request: Request, limit: int) -> bytes:
    """The body, or `TooLargeError` as soon as more than ``limit`` bytes arrived."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLargeError(f"request body is over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)
