"""Errors over HTTP: ONE table (error class → status) and RFC 9457 problem documents.

Every error response of the API is ``application/problem+json``::

    {"type": "https://usermgmt.dev/problems/last_owner", "title": "...", "status": 409,
     "detail": "...", "code": "last_owner", "instance": "/organizations/…/leave",
     "request_id": "…", ...extras such as "errors" for validation}

``code`` is the core's stable code. Server-side failures (5xx) never carry the
exception's text: the client gets a generic detail and the request id to quote,
the log gets the rest.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from usermgmt.errors import (
    AuthenticationError,
    AuthorizationError,
    BackendError,
    ConfigurationError,
    Conflict,
    InvalidToken,
    NotFound,
    OneTimeTokenError,
    PasswordPolicyError,
    PasswordTooLong,
    RateLimited,
    UserMgmtError,
    ValidationError,
    WrongPassword,
)

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "PROBLEM_TYPE_BASE",
    "STATUS_BY_ERROR",
    "Problem",
    "install_error_handlers",
    "problem_response",
    "rate_limit_headers",
    "status_for",
]

logger = logging.getLogger("usermgmt.http")

PROBLEM_MEDIA_TYPE: Final = "application/problem+json"
PROBLEM_TYPE_BASE: Final = "https://usermgmt.dev/problems/"

#: THE table. Looked up along the exception's MRO, so the most specific class wins
#: (WrongPassword is an AuthenticationError but answers 400, SEC-PW-08).
STATUS_BY_ERROR: Final[Mapping[type[UserMgmtError], int]] = {
    WrongPassword: 400,
    PasswordPolicyError: 422,
    ValidationError: 422,
    AuthenticationError: 401,
    OneTimeTokenError: 400,
    AuthorizationError: 403,
    NotFound: 404,
    Conflict: 409,
    RateLimited: 429,
    BackendError: 503,
    ConfigurationError: 500,
    UserMgmtError: 500,
}

#: Codes of the problems the framework raises itself (unknown route, wrong method, ...).
_HTTP_CODES: Final[Mapping[int, str]] = {
    400: "bad_request",
    401: "authentication_failed",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    503: "backend_unavailable",
}

#: Problem members an error's extras may never overwrite.
_RESERVED: Final = frozenset(
    {"type", "title", "status", "detail", "code", "instance", "request_id"}
)
_PASSWORD_FIELDS: Final = frozenset({"password", "current_password", "new_password"})
_REQUEST_SOURCES: Final = frozenset({"body", "query", "path", "header", "cookie"})
_SAFE_HEADER_VALUE = re.compile(r"^[\x20-\x7e]*$")


class Problem(BaseModel):
    """An RFC 9457 problem document, as every error response carries it (for OpenAPI)."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    code: str
    instance: str | None = None
    request_id: str | None = None
    errors: list[dict[str, Any]] | None = None


def status_for(error: UserMgmtError) -> int:
    """The HTTP status of a core error (the table above)."""
    for cls in type(error).__mro__:
        status = STATUS_BY_ERROR.get(cls)
        if status is not None:
            return status
    return 500  # pragma: no cover - UserMgmtError is in the table


def request_id_of(request: Request) -> str | None:
    """The request id the middleware assigned (None without the middleware)."""
    value = getattr(request.state, "request_id", None)
    return value if isinstance(value, str) else None


def rate_limit_headers(
    limit: int | None, remaining: int, reset_after: float, *, retry_after: float | None = None
) -> dict[str, str]:
    """``RateLimit-Limit/Remaining/Reset`` (and ``Retry-After`` when refused), in whole seconds."""
    headers: dict[str, str] = {}
    if limit is not None:
        headers["RateLimit-Limit"] = str(limit)
    headers["RateLimit-Remaining"] = str(max(0, remaining))
    headers["RateLimit-Reset"] = str(max(0, math.ceil(reset_after)))
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return headers


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
    phrase = _phrase(status)
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": title or phrase,
        "status": status,
        "detail": detail or title or phrase,
        "code": code,
    }
    if instance is not None:
        body["instance"] = instance
    if request_id is not None:
        body["request_id"] = request_id
    for key, value in (extras or {}).items():
        if key not in _RESERVED:
            body[key] = value
    all_headers = {"Cache-Control": "no-store", **(headers or {})}
    return JSONResponse(
        body, status_code=status, headers=all_headers, media_type=PROBLEM_MEDIA_TYPE
    )


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


# --- handlers ----------------------------------------------------------------------------


def error_response(request: Request, error: UserMgmtError) -> JSONResponse:
    """The problem document of a core error."""
    status = status_for(error)
    rid = request_id_of(request)
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = (
            'Bearer error="invalid_token"' if isinstance(error, InvalidToken) else "Bearer"
        )
    if isinstance(error, RateLimited):
        headers.update(
            rate_limit_headers(
                error.limit, error.remaining, error.reset_after, retry_after=error.retry_after
            )
        )
    if status >= 500:
        # The detail of a server-side error may name hosts or drivers: log it, do not send it.
        logger.error(
            "request failed: %s (%s)",
            error.code,
            error.detail,
            extra={"request_id": rid, "code": error.code},
        )
        return problem_response(
            status,
            error.code,
            title=error.title,
            detail=f"{error.title}. Quote request id {rid} when reporting this."
            if rid
            else error.title,
            instance=request.url.path,
            request_id=rid,
            headers=headers,
        )
    return problem_response(
        status,
        error.code,
        title=error.title,
        detail=error.detail,
        instance=request.url.path,
        request_id=rid,
        extras=error.extra,
        headers=headers,
    )


def validation_problem(request: Request, errors: Sequence[Any]) -> JSONResponse:
    """422 for a request the framework could not validate, without echoing any input."""
    return error_response(request, to_validation_error(errors))


def to_validation_error(errors: Sequence[Any]) -> ValidationError:
    """The core's ValidationError for FastAPI's error list, shaped as
    :func:`usermgmt.schemas.validation_error` shapes pydantic's: ``loc`` without the
    request part (``body``/``query``/``path``), ``msg`` and ``type``; no ``input``, no ``ctx``."""
    cleaned: list[dict[str, Any]] = []
    for error in errors:
        if not isinstance(error, Mapping):
            continue
        loc = [str(part) for part in error.get("loc", ())]
        if loc and loc[0] in _REQUEST_SOURCES:
            loc = loc[1:]
        kind = str(error.get("type", "value_error"))
        if kind == "json_invalid":
            loc = []
        if kind == "string_too_long" and loc and loc[-1] in _PASSWORD_FIELDS:
            return PasswordTooLong(
                "Password is too long.",
                errors=[{"loc": loc, "msg": "too long", "type": "too_long"}],
            )
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        if kind == "json_invalid":
            message = "the body is not valid JSON"
        cleaned.append({"loc": loc, "msg": message, "type": kind})
    fields = ", ".join(".".join(e["loc"]) or "body" for e in cleaned)
    return ValidationError(f"Invalid input: {fields}", errors=cleaned)


def _http_problem(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    status = exc.status_code
    if status == 400 and isinstance(exc.__cause__, ValueError | RecursionError):
        # FastAPI could not decode the body (bad UTF-8, nesting too deep): malformed JSON
        return validation_problem(request, [{"loc": ("body",), "type": "json_invalid"}])
    code = _HTTP_CODES.get(status, "error" if status < 500 else "internal_error")
    headers = {
        key: value for key, value in (exc.headers or {}).items() if _SAFE_HEADER_VALUE.match(value)
    }
    detail = exc.detail if isinstance(exc.detail, str) and status < 500 else None
    return problem_response(
        status,
        code,
        detail=detail,
        instance=request.url.path,
        request_id=request_id_of(request),
        headers=headers,
    )


def internal_error_response(request_id: str | None, path: str | None = None) -> JSONResponse:
    """500 for an unexpected exception: a generic detail and the request id, nothing else."""
    detail = "An unexpected error occurred."
    if request_id:
        detail += f" Quote request id {request_id} when reporting it."
    return problem_response(
        500,
        "internal_error",
        title="Internal Server Error",
        detail=detail,
        instance=path,
        request_id=request_id,
    )


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
