"""Errors over HTTP for FastAPI: the error handlers that render every error as an RFC 9457
problem document.

The table (error class → status), the problem documents and the validation error shape
are the adapter-neutral contract of :mod:`usermgmt.http`, shared with the Flask
adapter; this module only turns them into Starlette responses::

    {"type": "https://usermgmt.dev/problems/last_owner", "title": "...", "status": 409,
     "detail": "...", "code": "last_owner", "instance": "/organizations/…/leave",
     "request_id": "…", ...extras such as "errors" for validation}

``code`` is the core's stable code. Server-side failures (5xx) never carry the
exception's text: the client gets a generic detail and the request id to quote,
the log gets the rest.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from usermgmt.errors import UserMgmtError
from usermgmt.http import (
    PROBLEM_MEDIA_TYPE,
    PROBLEM_TYPE_BASE,
    STATUS_BY_ERROR,
    Problem,
    ProblemReply,
    error_problem,
    http_problem,
    internal_error_problem,
    invalid_json,
    problem,
    rate_limit_headers,
    status_for,
    to_validation_error,
)

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "PROBLEM_TYPE_BASE",
    "STATUS_BY_ERROR",
    "Problem",
    "allowed_methods",
    "install_error_handlers",
    "problem_response",
    "rate_limit_headers",
    "status_for",
]

logger = logging.getLogger("usermgmt.http")

_SAFE_HEADER_VALUE = re.compile(r"^[\x20-\x7e]*$")


def request_id_of(request: Request) -> str | None:
    """The request id the middleware assigned (None without the middleware)."""
    value = getattr(request.state, "request_id", None)
    return value if isinstance(value, str) else None


def render(reply: ProblemReply) -> JSONResponse:
    """A problem document as a Starlette response."""
    return JSONResponse(
        reply.body, status_code=reply.status, headers=reply.headers, media_type=PROBLEM_MEDIA_TYPE
    )


def problem_response(
    status: int,
    code: str,
    *,
    title: str | None = None,
    detail: str | None = None,
    instance: str | None = None,
    request_id: str | None = None,
    extras: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """A problem document response (``Cache-Control: no-store``: errors are never cached)."""
    return render(
        problem(
            status,
            code,
            title=title,
            detail=detail,
            instance=instance,
            request_id=request_id,
            extras=extras,
            headers=headers,
        )
    )


# --- handlers ----------------------------------------------------------------------------


def error_response(request: Request, error: UserMgmtError) -> JSONResponse:
    """The problem document of a core error."""
    return render(
        error_problem(error, instance=request.url.path, request_id=request_id_of(request))
    )


def validation_problem(request: Request, errors: Sequence[Any]) -> JSONResponse:
    """422 for a request the framework could not validate, without echoing any input."""
    return error_response(request, to_validation_error(errors))


#: The methods a 405's ``Allow`` may list (those routes can be declared for).
_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")
#: What routing reads from a scope: a probe copies only these, never the keys routing
#: itself added (the route tried, path parameters, FastAPI's inclusion context).
_ROUTING_KEYS = ("type", "path", "raw_path", "root_path", "headers", "scheme", "server", "app")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the application serves at this request's path, in
    alphabetical order: what a 405's ``Allow`` lists (Starlette names only the methods
    of the first route matching the path; Flask, and now this, all of them)."""
    router = getattr(request.app, "router", None)
    routes = getattr(router, "routes", None) or ()
    base = {key: request.scope[key] for key in _ROUTING_KEYS if key in request.scope}
    allowed: list[str] = []
    for method in _METHODS:
        for route in routes:
            match, _ = route.matches({**base, "method": method})
            if match is Match.FULL:
                allowed.append(method)
                break
    return allowed


def _http_problem(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    status = exc.status_code
    if status == 400 and isinstance(exc.__cause__, ValueError | RecursionError):
        # FastAPI could not decode the body (bad UTF-8, nesting too deep): malformed JSON
        return error_response(request, invalid_json())
    headers = {
        key: value for key, value in (exc.headers or {}).items() if _SAFE_HEADER_VALUE.match(value)
    }
    if status == 405:
        methods = allowed_methods(request)
        if methods:
            headers = {k: v for k, v in headers.items() if k.lower() != "allow"}
            headers["Allow"] = ", ".join(methods)
    detail = exc.detail if isinstance(exc.detail, str) and status < 500 else None
    return render(
        http_problem(
            status,
            detail=detail,
            instance=request.url.path,
            request_id=request_id_of(request),
            headers=headers,
        )
    )


def internal_error_response(request_id: str | None, path: str | None = None) -> JSONResponse:
    """500 for an unexpected exception: a generic detail and the request id, nothing else."""
    return render(internal_error_problem(request_id, path))


async def _on_usermgmt_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, UserMgmtError):  # pragma: no cover - registered for this class
        raise exc
    return error_response(request, exc)


async def _on_request_validation(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, RequestValidationError):  # pragma: no cover
        raise exc
    return validation_problem(request, exc.errors())


async def _on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, StarletteHTTPException):  # pragma: no cover
        raise exc
    return _http_problem(request, exc)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    rid = request_id_of(request)
    logger.error("unhandled %s", type(exc).__name__, exc_info=exc, extra={"request_id": rid})
    return internal_error_response(rid, request.url.path)


def install_error_handlers(app: FastAPI) -> None:
    """Render every error as a problem document: core errors through the table, request
    validation as 422 ``validation_error``, framework HTTP errors (404, 405, 413, ...)
    with their status, and anything unexpected as a generic 500."""
    app.add_exception_handler(UserMgmtError, _on_usermgmt_error)
    app.add_exception_handler(RequestValidationError, _on_request_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(Exception, _on_unexpected)
