"""The guards of `nightowl models serve`: keys, admission, body size, safe error bodies.

`install_guards` adds to an app: a body-size limit (413 before the body is parsed), a
last-resort handler that turns any escaped exception into a generic 500 with an error
id (logged with its traceback), exception handlers with OpenAI-shaped one-line bodies
whose messages have file paths removed, and returns a FastAPI dependency that checks
the bearer key (when an authenticator is given) and holds a per-key / per-tenant /
server-wide concurrency slot for the request.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nightowl.errors import ModelError, NightowlError, UserError
from nightowl.llm.serve_limits import (
    Admission,
    OverloadedError,
    ServeLimits,
    internal_error,
    public_message,
)

#: token -> (key id, tenant), or None for an unknown / revoked key (runs in a thread)
Authenticator = Callable[[str], tuple[str, str] | None]


class AuthError(NightowlError):
    """Missing or invalid API key (401)."""


class TooLargeError(NightowlError):
    """Request body over the limit (413)."""


def error_json(
    status: int, message: str, kind: str, retry_after: int | None = None
) -> JSONResponse:
    """An OpenAI-shaped error response (``Retry-After`` with 429)."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    content = {"error": {"message": message, "type": kind, "code": status}}
    return JSONResponse(status_code=status, headers=headers, content=content)


def too_large(limit: int) -> JSONResponse:
    """The 413 for a body over ``limit`` bytes."""
    return error_json(413, f"request body is over the {limit}-byte limit", "invalid_request_error")


class SendWatch:
    """An ASGI ``send`` that notes the response's status once the response has started."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.status: int | None = None

    async def __call__(self, message: Message) -> None:
        """Note the status of the response start, then send the message on."""
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
        await self.send(message)


class BodyLimit:
    """Pure ASGI middleware: 413 for a body over ``limit`` bytes, declared or streamed.

    The declared ``Content-Length`` is checked before anything is read; a chunked body
    is counted as it arrives and cut off at the limit, so an 8 MB body is never held.
    """

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request through, or answer 413."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and (not value.isdigit() or int(value) > self.limit):
                await too_large(self.limit)(scope, receive, send)
                return
        seen = 0
        sent = SendWatch(send)

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise TooLargeError(f"request body is over the {self.limit}-byte limit")
            return message

        try:
            await self.app(scope, counted, sent)
        except TooLargeError:
            if sent.status is None:
                await too_large(self.limit)(scope, receive, send)


class CatchAll:
    """Pure ASGI middleware: an escaped exception becomes a generic 500 with an error id.

    The traceback is logged under that id; the server goes on serving.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request through; answer 500 if it raised before responding."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = SendWatch(send)
        try:
            await self.app(scope, receive, sent)
        except Exception as exc:  # noqa: BLE001 - last resort: generic 500, keep serving
            if sent.status is not None:
                raise
            message = internal_error(exc, str(scope.get("path", "?")))
            await error_json(500, message, "server_error")(scope, receive, send)


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "json-or-python"}


def validation_message(errors: list[Any]) -> str:
    """One line for pydantic errors: the most telling error, its field path, its reason.

    A union field reports one error per member type ("should be a valid string" for a
    list that is too long); a constraint error is preferred over such type mismatches.
    """
    if not errors:
        return "invalid request"
    first = next((e for e in errors if not str(e.get("type", "")).endswith("_type")), errors[0])
    if first.get("type") == "json_invalid":
        return f"malformed JSON body: {first.get('msg')}"
    where = ".".join(
        str(p) for p in first.get("loc", ())
        if p != "body" and str(p) not in _TYPE_TAGS and "[" not in str(p)
        and not str(p).startswith("function-")
    )  # fmt: skip
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"invalid request at {where or 'body'}: {msg}"


def bearer(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer`` header, or `AuthError`."""
    if not authorization or not authorization.lower().startswith("bearer "):
        raise AuthError("missing API key: send 'Authorization: Bearer <key>'")
    token = authorization[7:].strip()
    if not token:
        raise AuthError("missing API key: send 'Authorization: Bearer <key>'")
    return token


def token_digest(token: str) -> str:
    """sha256 of a bearer token (the identity the pre-auth rate limit counts)."""
    return hashlib.sha256(token.encode()).hexdigest()


def install_guards(
    app: FastAPI, limits: ServeLimits, authenticate: Authenticator | None
) -> Callable[[Request], AsyncIterator[None]]:
    """Add middleware and handlers to ``app``; return the per-request guard dependency."""
    admission = Admission(limits)
    app.state.admission = admission
    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)
    app.add_middleware(CatchAll)

    def bad(message: str) -> JSONResponse:
        return error_json(400, public_message(message), "invalid_request_error")

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return bad(validation_message(list(exc.errors())))

    @app.exception_handler(ValueError)
    async def _bad_value(_: Request, exc: ValueError) -> JSONResponse:
        return bad(str(exc) or "invalid value")

    @app.exception_handler(UserError)
    async def _user(_: Request, exc: UserError) -> JSONResponse:
        return bad(str(exc))

    @app.exception_handler(NotImplementedError)
    async def _unsupported(_: Request, exc: NotImplementedError) -> JSONResponse:
        return bad(str(exc) or "not supported by this backend")

    @app.exception_handler(AuthError)
    async def _auth(_: Request, exc: AuthError) -> JSONResponse:
        return error_json(401, str(exc), "authentication_error")

    @app.exception_handler(OverloadedError)
    async def _busy(_: Request, exc: OverloadedError) -> JSONResponse:
        return error_json(429, str(exc), "rate_limit_error", retry_after=exc.retry_after_s)

    @app.exception_handler(ModelError)
    async def _model(request: Request, exc: ModelError) -> JSONResponse:
        status = 400 if "does not support" in str(exc) else (exc.status or 500)
        if status < 500:
            return error_json(status, public_message(str(exc)), "invalid_request_error")
        return error_json(status, internal_error(exc, request.url.path), "server_error")

    async def guard(request: Request) -> AsyncIterator[None]:
        client = request.client.host if request.client else "unknown"
        if authenticate is None:
            who, tenant = f"client:{client}", "default"
            admission.check_rate(who)
        else:
            token = bearer(request.headers.get("authorization"))
            admission.check_rate(token_digest(token))
            found = await asyncio.to_thread(authenticate, token)
            if found is None:
                raise AuthError("invalid or revoked API key")
            who, tenant = found
            admission.check_tenant_rate(tenant)
        with admission.slot(who, tenant):
            yield

    return guard

