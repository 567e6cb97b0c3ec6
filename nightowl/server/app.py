"""`nightowl serve`: the FastAPI app (thin routes; logic in `ChatService`).

Routes: ``POST /v1/chat/completions``, ``GET /v1/models`` (bearer key required unless
disabled), ``GET /health``, ``GET /metrics`` (Prometheus text). Every error is the
OpenAI shape ``{"error": {"message", "type", "code"}}`` with a one-line message:
400 bad input or unsupported field, 401 bad key, 402 budget spent, 404 unknown model,
413 body too large, 429 busy (with Retry-After), 5xx only for server-side failures.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nightowl.errors import BudgetExceededError, NightowlError, StoreError, UserError
from nightowl.llm.serve import sse_response
from nightowl.server.metrics import Metrics
from nightowl.server.protocol import ChatCompletionRequest
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


def one_line(text: str) -> str:
    """First line of a message, trimmed (error bodies stay one line)."""
    return (text.strip().splitlines() or [""])[0][:500]


def error_response(exc: BaseException, retry_after: int = 2) -> JSONResponse:
    """The OpenAI-shaped error for ``exc``."""
    status, kind = 500, "server_error"
    for cls, code, name in _STATUS:
        if isinstance(exc, cls):
            status, kind = code, name
            break
    message = one_line(str(exc)) or type(exc).__name__
    headers = {"Retry-After": str(retry_after)} if status == 429 else None
    return JSONResponse(
        status_code=status,
        headers=headers,
        content={"error": {"message": message, "type": kind, "code": status}},
    )


def _validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    if first.get("type") == "json_invalid":
        return f"malformed JSON body: {first.get('msg')}"
    where = ".".join(str(p) for p in first.get("loc", ()))
    return f"invalid request at {where or 'body'}: {first.get('msg')}"


class CountRequests:
    """Pure ASGI middleware: counts /v1/ requests by status with their latency.

    Pure ASGI rather than ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware
    hides the client's disconnect from ``request.is_disconnected()``, which the chat
    route needs to cancel abandoned generations. An exception that escaped a route
    becomes a one-line 500 here, and the server keeps serving.
    """

    def __init__(self, app: ASGIApp, *, metrics: Metrics, retry_after: int) -> None:
        self.app = app
        self.metrics = metrics
        self.retry_after = retry_after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request through, recording its status and latency."""
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        sent = False

        async def send_counted(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status, sent = int(message["status"]), True
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        except Exception as exc:  # noqa: BLE001 - last resort: one-line 500, keep serving
            if sent:
                raise
            response = error_response(exc, self.retry_after)
            status = response.status_code
            await response(scope, receive, send)
        finally:
            self.metrics.request_done(status, time.perf_counter() - started)


def create_app(service: ChatService, *, sleep: bool = False) -> FastAPI:
    """The app over ``service``; ``sleep`` starts the idle-thread rethink loop."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if sleep:
            # Think only while no chat request is in flight (serving comes first).
            service.assistant.start_sleep(gate=lambda: service.metrics.in_flight == 0)
        yield
        await service.assistant.aclose()

    app = FastAPI(title="nightowl serve", version="1", lifespan=lifespan)
    app.state.service = service
    limit = service.config.retry_after_s

    app.add_middleware(CountRequests, metrics=service.metrics, retry_after=limit)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "in_flight": service.metrics.in_flight}

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(service.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models", response_model=None)
    async def models(request: Request) -> JSONResponse | dict[str, Any]:
        try:
            await service.authenticate(request.headers.get("authorization"))
        except NightowlError as exc:
            return error_response(exc, limit)
        return service.model_list().model_dump()

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> Response | dict[str, Any]:
        try:
            key = await service.authenticate(request.headers.get("authorization"))
            declared = request.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > service.config.max_body_bytes:
                raise TooLargeError(
                    f"request body of {declared} bytes is over the "
                    f"{service.config.max_body_bytes}-byte limit"
                )
            raw = await _read_limited(request, service.config.max_body_bytes)
            try:
                body = ChatCompletionRequest.model_validate_json(raw)
            except ValidationError as exc:
                raise UserError(_validation_message(exc)) from None
            async with service.admitted():
                answer = await service.complete(
                    body,
                    key=key,
                    thread_header=request.headers.get("x-nightowl-thread"),
                    disconnected=request.is_disconnected,
                )
        except (NightowlError, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            return error_response(exc, limit)
        if answer.events is not None:
            return sse_response(answer.events)
        return JSONResponse(answer.json)

    return app


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


def dumps(obj: Any) -> str:
    """Compact JSON (used by tests and the CLI)."""
    return json.dumps(obj, separators=(",", ":"))
