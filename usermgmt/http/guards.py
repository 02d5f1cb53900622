"""The rules every request goes through before its route, in both adapters' middleware:
request id, security headers, the global rate limit, the body size announced, and the
bearer token of the ``Authorization`` header.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from usermgmt.errors import UserMgmtError
from usermgmt.http.problems import (
    ProblemReply,
    body_too_large,
    http_problem,
    problem,
    rate_limit_headers,
    status_for,
)

if TYPE_CHECKING:
    from usermgmt.app import UserManagement

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "HSTS",
    "REQUEST_ID_HEADER",
    "SECURITY_HEADERS",
    "RateVerdict",
    "bearer_token_from",
    "check_content_length",
    "check_global_rate",
    "is_exempt",
    "request_id_from",
]

REQUEST_ID_HEADER: Final = "X-Request-ID"
#: The default cap on request bodies (``max_body_bytes`` of both adapters): 1 MiB.
DEFAULT_MAX_BODY_BYTES: Final = 1024 * 1024
HSTS: Final = "max-age=63072000; includeSubDomains"
#: Sent on every response (HSTS too, when the request came over HTTPS).
SECURITY_HEADERS: Final[Mapping[str, str]] = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._~:+/=-]{1,128}$")


def request_id_from(given: str | None) -> str:
    """The caller's ``X-Request-ID`` when it is a sane token (at most 128 characters of
    ``[A-Za-z0-9._~:+/=-]``), else a fresh one."""
    if given is not None and _REQUEST_ID.match(given):
        return given
    return uuid.uuid4().hex


def is_exempt(path: str, prefixes: Iterable[str]) -> bool:
    """Whether ``path`` is one of ``prefixes`` or below one (paths never rate-limited)."""
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes)


@dataclass(frozen=True, slots=True)
class RateVerdict:
    """The global rate limit's answer for one request: ``RateLimit-*`` headers for the
    response (empty when not counted) and, when refused, the problem to answer instead."""

    headers: dict[str, str] = field(default_factory=dict)
    refusal: ProblemReply | None = None


def check_global_rate(
    um: UserManagement,
    peer: str | None,
    forwarded_for: str | None,
    *,
    instance: str | None,
    request_id: str | None,
) -> RateVerdict:
    """Count the request against the global per-client limit (``RATE_LIMIT_*``; the
    client address follows ``TRUSTED_PROXIES``). Refused: 429 ``rate_limited`` with
    ``Retry-After``. A limiter that fails answers its error's status (503 when down).
    Synchronous: with Redis this is a network round trip."""
    address = um.client_ip(peer, forwarded_for)
    try:
        decision = um.check_request_rate(address)
    except UserMgmtError as exc:
        refusal = problem(
            status_for(exc), exc.code, detail=exc.title, instance=instance, request_id=request_id
        )
        return RateVerdict(refusal=refusal)
    if decision is None:
        return RateVerdict()
    headers = rate_limit_headers(decision.limit, decision.remaining, decision.reset_after)
    if decision.allowed:
        return RateVerdict(headers)
    refused = rate_limit_headers(
        decision.limit, 0, decision.reset_after, retry_after=decision.reset_after
    )
    return RateVerdict(
        {**headers, **refused},
        problem(
            429,
            "rate_limited",
            detail="Too many requests; try again later.",
            instance=instance,
            request_id=request_id,
            headers=refused,
        ),
    )


def check_content_length(
    value: str | None, limit: int, *, instance: str | None, request_id: str | None
) -> ProblemReply | None:
    """400 for a ``Content-Length`` that is not a number, 413 above ``limit``, else None
    (checked before the body is read; a body without it is counted as it arrives)."""
    if value is None:
        return None
    if not value.isdigit():
        return http_problem(
            400,
            detail="Invalid Content-Length header.",
            instance=instance,
            request_id=request_id,
        )
    if int(value) > limit:
        return body_too_large(limit, instance=instance, request_id=request_id)
    return None


def bearer_token_from(authorization: str | None) -> str | None:
    """The credentials of ``Authorization: Bearer <token>`` (scheme case-insensitive), or
    None for a missing header, another scheme or an empty token."""
    if not authorization:
        return None
    scheme, _, credentials = authorization.partition(" ")
    credentials = credentials.strip()
    if not scheme or not credentials or scheme.lower() != "bearer":
        return None
    return credentials
