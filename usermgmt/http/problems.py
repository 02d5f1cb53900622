"""Problem documents (RFC 9457): THE table of core errors to HTTP statuses, and every
error body both adapters send.

Every error response is ``application/problem+json``::

    {"type": "https://usermgmt.dev/problems/last_owner", "title": "...", "status": 409,
     "detail": "...", "code": "last_owner", "instance": "/organizations/…/leave",
     "request_id": "…", ...extras such as "errors" for validation}

``code`` is the core's stable code. Server-side failures (5xx) never carry the
exception's text: the client gets a generic detail and the request id to quote, the
log gets the rest.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Final

from pydantic import BaseModel, ConfigDict

from usermgmt.errors import (
    AuthenticationError,
    AuthorizationError,
    BackendError,
    ConfigurationError,
    Conflict,
    InvalidToken,
    NotFound,
    OAuthError,
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
    "ProblemReply",
    "body_too_large",
    "code_for_status",
    "error_problem",
    "http_problem",
    "internal_error_problem",
    "invalid_json",
    "json_bytes",
    "problem",
    "rate_limit_headers",
    "status_for",
    "to_validation_error",
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
    OAuthError: 400,
    AuthorizationError: 403,
    NotFound: 404,
    Conflict: 409,
    RateLimited: 429,
    BackendError: 503,
    ConfigurationError: 500,
    UserMgmtError: 500,
}

#: Codes of the problems the web framework raises itself (unknown route, wrong method, ...).
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
_JSON_INVALID: Final = {"loc": ("body",), "type": "json_invalid"}


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


@dataclass(frozen=True, slots=True)
class ProblemReply:
    """A problem response before a framework renders it: status, JSON body, headers
    (``Content-Type`` is always :data:`PROBLEM_MEDIA_TYPE`)."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    def content(self) -> bytes:
        """The body as sent (:func:`json_bytes`)."""
        return json_bytes(self.body)


def json_bytes(value: Any) -> bytes:
    """JSON as both adapters send it: compact, UTF-8, no NaN (Starlette's JSONResponse)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def status_for(error: UserMgmtError) -> int:
    """The HTTP status of a core error (the table above)."""
    for cls in type(error).__mro__:
        status = STATUS_BY_ERROR.get(cls)
        if status is not None:
            return status
    return 500  # pragma: no cover - UserMgmtError is in the table


def code_for_status(status: int) -> str:
    """The ``code`` of a problem the web framework raised with this status."""
    return _HTTP_CODES.get(status, "error" if status < 500 else "internal_error")


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem(
    status: int,
    code: str,
    *,
    title: str | None = None,
    detail: str | None = None,
    instance: str | None = None,
    request_id: str | None = None,
    extras: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> ProblemReply:
    """A problem document (``Cache-Control: no-store``: errors are never cached)."""
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
    return ProblemReply(status, body, {"Cache-Control": "no-store", **(headers or {})})


def http_problem(
    status: int,
    *,
    detail: str | None = None,
    instance: str | None = None,
    request_id: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> ProblemReply:
    """A problem the web framework raised itself (404, 405, 413, ...), coded by status."""
    return problem(
        status,
        code_for_status(status),
        detail=detail,
        instance=instance,
        request_id=request_id,
        headers=headers,
    )


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


def error_problem(
    error: UserMgmtError, *, instance: str | None, request_id: str | None
) -> ProblemReply:
    """The problem document of a core error: its status from the table,
    ``WWW-Authenticate`` on 401, ``Retry-After``/``RateLimit-*`` on 429, and for 5xx a
    generic detail with the request id (the real one is logged, never sent)."""
    status = status_for(error)
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
            extra={"request_id": request_id, "code": error.code},
        )
        return problem(
            status,
            error.code,
            title=error.title,
            detail=f"{error.title}. Quote request id {request_id} when reporting this."
            if request_id
            else error.title,
            instance=instance,
            request_id=request_id,
            headers=headers,
        )
    return problem(
        status,
        error.code,
        title=error.title,
        detail=error.detail,
        instance=instance,
        request_id=request_id,
        extras=error.extra,
        headers=headers,
    )


def internal_error_problem(request_id: str | None, instance: str | None = None) -> ProblemReply:
    """500 for an unexpected exception: a generic detail and the request id, nothing else."""
    detail = "An unexpected error occurred."
    if request_id:
        detail += f" Quote request id {request_id} when reporting it."
    return problem(
        500,
        "internal_error",
        title="Internal Server Error",
        detail=detail,
        instance=instance,
        request_id=request_id,
    )


def body_too_large(limit: int, *, instance: str | None, request_id: str | None) -> ProblemReply:
    """413 ``payload_too_large`` for a body over ``limit`` bytes."""
    return http_problem(
        413,
        detail=f"The request body is larger than {limit} bytes.",
        instance=instance,
        request_id=request_id,
    )


def invalid_json() -> ValidationError:
    """422 ``validation_error`` for a body that is not JSON (the input is not echoed)."""
    return to_validation_error([_JSON_INVALID])


def to_validation_error(errors: Sequence[Any]) -> ValidationError:
    """The core's ValidationError for a web framework's (or pydantic's) error list, shaped
    as :func:`usermgmt.schemas.validation_error` shapes pydantic's: ``loc`` without the
    request part (``body``/``query``/``path``), ``msg`` and ``type``; no ``input``, no
    ``ctx``. An over-long password is reported as PasswordTooLong."""
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
