"""Ocean's error envelopes (400 `error` / `errors`, 503 for backend failures) and the app's handlers.

Every error body passes through `scrub`, which replaces URLs with Ocean's placeholder: an error must
never hand a dataset location (or a backend's address) to whoever sent the request. A message that
names a client's value quotes it through `echo` (a short, printable prefix), and `scrub` cuts any
string still longer than MAX_ERROR_TEXT, so an error body never grows with the request.
An exception no handler expected is a 500 with a fixed sentence and a request id; its text goes to
the log under that id, never to the client.
"""

from __future__ import annotations

import logging
import re
import traceback
import uuid
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

URL_STRIPPED = "<URL stripped for security reasons>"
# Anything with a scheme (http, https, ipfs, s3, postgresql+psycopg2, ...) and bare `www.` hosts.
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s\"'<>]*|\bwww\.[^\s\"'<>]+")

# Where FastAPI puts a parameter; Ocean's field errors name the field alone.
_LOCATIONS = frozenset({"body", "query", "path", "header", "cookie"})

# How much of a client's value an error message may quote, and the most any error string may hold.
ECHO_CHARS = 40
MAX_ERROR_TEXT = 1000
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")

# The header that carries the id under which an unhandled error was logged.
REQUEST_ID_HEADER = "X-Request-ID"
INTERNAL_ERROR = "internal error: the Provider could not handle this request"


class OceanHTTPError(Exception):
    """An error answer: `status_code` and the JSON `body` Ocean's clients expect."""

    def __init__(self, status_code: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"HTTP {status_code}: {body!r}")
        self.status_code = status_code
        self.body = body
        self.headers = dict(headers or {})


def strip_urls(text: str) -> str:
    return _URL.sub(URL_STRIPPED, text)


def echo(value: object, limit: int = ECHO_CHARS) -> str:
    """A client's value as an error message may quote it: printable ASCII (others become "?"), at most
    `limit` characters, then "…" and the full length, so the answer never grows with the input."""
    text = value if isinstance(value, str) else repr(value)
    shown = _UNPRINTABLE.sub("?", text[:limit])
    return shown if len(text) <= limit else f"{shown}… ({len(text)} characters)"


def _bounded(text: str) -> str:
    # A last guard for messages that quote a value without `echo` (a field name, a library's message).
    return text if len(text) <= MAX_ERROR_TEXT else text[:MAX_ERROR_TEXT] + "…"


def scrub(value: Any) -> Any:
    """`value` with every URL in every string (keys included) replaced by the placeholder, and each
    string cut to MAX_ERROR_TEXT characters."""
    if isinstance(value, str):
        return _bounded(strip_urls(value))
    if isinstance(value, Mapping):
        return {scrub(key): scrub(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(item) for item in value]
    return value


def bad_request(message: str) -> OceanHTTPError:
    """400 `{"error": message}`: Ocean's business-rule failure."""
    return OceanHTTPError(400, {"error": message})


def forbidden(message: str) -> OceanHTTPError:
    return OceanHTTPError(403, {"error": message})


def not_found(message: str) -> OceanHTTPError:
    return OceanHTTPError(404, {"error": message})


def field_errors(errors: Mapping[str, str | list[str]]) -> OceanHTTPError:
    """400 in flask-sieve's shape, one entry per field that broke a rule."""
    return OceanHTTPError(400, {"message": "Validation error", "errors": dict(errors), "success": False})


def resource_error(resource: str, code: str) -> OceanHTTPError:
    """400 `{"error": {resource: code}}`, e.g. `{"error": {"dataset": "not_trusted_algo"}}`."""
    return OceanHTTPError(400, {"error": {resource: code}})


def backend_error(message: str) -> OceanHTTPError:
    """503: a part the Provider depends on (chain, Dagster, a database) failed or is unreachable."""
    return OceanHTTPError(503, {"error": message})


def chain_unreachable(exc: BaseException) -> str | None:
    """Ocean's 503 message for a chain RPC call that could not connect or timed out, else None.

    web3's HTTP provider raises requests' errors, whose text names the node's host and port (a
    backend address the consumer must not see), so the message names only the kind of failure.
    """
    import requests
    from web3.exceptions import ProviderConnectionError, RequestTimedOut

    if isinstance(exc, requests.Timeout | RequestTimedOut):
        return f"the chain is unavailable: the RPC node did not answer in time ({type(exc).__name__})"
    if isinstance(exc, requests.ConnectionError | ProviderConnectionError):
        return f"the chain is unavailable: cannot reach the RPC node ({type(exc).__name__})"
    return None


def error_response(status_code: int, body: Any, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(scrub(body), status_code=status_code, headers=dict(headers or {}))


def _field_name(location: tuple[Any, ...]) -> str:
    # A location may hold a client's own key (an unknown field of a strict model): quoted via echo.
    parts = [echo(part) if isinstance(part, str) else str(part) for part in location]
    if parts and parts[0] in _LOCATIONS:
        parts = parts[1:]
    return ".".join(parts) or "body"


def validation_errors(errors: list[Any]) -> dict[str, list[str]]:
    """Pydantic/FastAPI errors as `{field: [message, ...]}`, without the rejected input: it may be a URL
    or a secret header."""
    fields: dict[str, list[str]] = {}
    for error in errors:
        name = _field_name(tuple(error.get("loc", ())))
        fields.setdefault(name, []).append(str(error.get("msg", "invalid value")))
    return fields


async def _ocean_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OceanHTTPError)
    return error_response(exc.status_code, exc.body, exc.headers)


async def _request_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    fields = validation_errors(list(exc.errors()))
    return error_response(400, {"message": "Validation error", "errors": fields, "success": False})


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail
    has_envelope = isinstance(detail, Mapping) and ("error" in detail or "errors" in detail)
    body = detail if has_envelope else {"error": detail}
    return error_response(exc.status_code, body, exc.headers)


def _log_unhandled(exc: BaseException, request_id: str) -> None:
    # The traceback text goes through the same scrub: exception messages often quote URLs.
    text = "".join(traceback.format_exception(exc))
    logger.error("unhandled error in a request (request id %s)\n%s", request_id, strip_urls(text))


def unhandled_response(exc: BaseException) -> JSONResponse:
    """The answer to an exception no route handled: 503 with a fixed sentence when the chain cannot be
    reached (a backend outage, logged without a traceback), else 500 with a fixed sentence. Both
    carry a request id, in the body and in X-Request-ID, under which the exception is logged; the
    exception's own text never reaches the client (it may quote input, paths or addresses)."""
    request_id = uuid.uuid4().hex
    headers = {REQUEST_ID_HEADER: request_id}
    unreachable = chain_unreachable(exc)
    if unreachable:
        logger.warning("%s (request id %s)", unreachable, request_id)
        return error_response(503, {"error": unreachable, "requestId": request_id}, headers)
    _log_unhandled(exc, request_id)
    body = {"error": f"{INTERNAL_ERROR} (request id {request_id})", "requestId": request_id}
    return error_response(500, body, headers)


class UnhandledErrors:
    """Turns any exception a route lets escape into a fixed answer (`unhandled_response`), logged once
    and without URLs.

    A plain ASGI middleware rather than an `Exception` handler: Starlette re-raises after such a
    handler, and the server would then log the raw exception, URLs and all.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            response = unhandled_response(exc)
            if started:
                return  # headers are out: all that is left is to end the connection
            await response(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(OceanHTTPError, _ocean_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(UnhandledErrors)
