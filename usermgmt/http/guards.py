"""The rules every request goes through before its route, in both adapters' middleware:
request id, security headers, the global rate limit, the body size announced, and the
bearer token of the ``Authorization`` header.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
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
from usermgmt.observability.context import current_user_id

if TYPE_CHECKING:
    from usermgmt.app import UserManagement
    from usermgmt.ports import RateLimitResult

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "HSTS",
    "REQUEST_ID_HEADER",
    "SECURITY_HEADERS",
    "RateVerdict",
    "bearer_token_from",
    "check_content_length",
    "check_global_rate",
    "count_global_rate",
    "exemption",
    "global_rate_verdict",
    "is_exempt",
    "log_access",
    "rate_limit_headers_raw",
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
    return os.urandom(16).hex()  # 32 hex digits, like uuid4().hex, without the object


def is_exempt(path: str, prefixes: Iterable[str]) -> bool:
    """Whether ``path`` is one of ``prefixes`` or below one (paths never rate-limited)."""
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes)


def exemption(prefixes: Iterable[str]) -> Callable[[str], bool]:
    """:func:`is_exempt` for fixed ``prefixes``, prepared once: one set look-up and one
    ``startswith`` per call."""
    given = tuple(prefixes)
    exact = frozenset(given)
    below = tuple(p.rstrip("/") + "/" for p in given)

    def exempt(path: str) -> bool:
        return path in exact or path.startswith(below)

    return exempt


@dataclass(frozen=True, slots=True)
class RateVerdict:
    """The global rate limit's answer for one request: ``RateLimit-*`` headers for the
    response (empty when not counted) and, when refused, the problem to answer instead."""

    headers: dict[str, str] = field(default_factory=dict)
    refusal: ProblemReply | None = None


def count_global_rate(
    um: UserManagement, peer: str | None, forwarded_for: str | None
) -> RateLimitResult | UserMgmtError | None:
    """Count the request against the global per-client limit (``RATE_LIMIT_*``; the
    client address follows ``TRUSTED_PROXIES``): the limiter's decision, None when
    nothing is counted (disabled, unknown client), or the error the limiter raised.
    Synchronous: with Redis this is a network round trip."""
    try:
        return um.check_request_rate(um.client_ip(peer, forwarded_for))
    except UserMgmtError as exc:
        return exc


def global_rate_verdict(
    outcome: RateLimitResult | UserMgmtError | None,
    *,
    instance: str | None,
    request_id: str | None,
) -> RateVerdict:
    """The verdict for an outcome of :func:`count_global_rate`. Refused: 429
    ``rate_limited`` with ``Retry-After``; a limiter that failed answers its error's
    status (503 when down)."""
    if outcome is None:
        return RateVerdict()
    if isinstance(outcome, UserMgmtError):
        refusal = problem(
            status_for(outcome),
            outcome.code,
            detail=outcome.title,
            instance=instance,
            request_id=request_id,
        )
        return RateVerdict(refusal=refusal)
    decision = outcome
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
    return global_rate_verdict(
        count_global_rate(um, peer, forwarded_for), instance=instance, request_id=request_id
    )


#: ``RateLimit-Limit`` and ``RateLimit-Reset`` pairs already built, by value (a limit and
#: a window take few values: these are made once, not per request).
_LIMIT_PAIRS: dict[int, tuple[bytes, bytes]] = {}
_RESET_PAIRS: dict[int, tuple[bytes, bytes]] = {}
_PAIRS_LIMIT: Final = 1024


def _pair(cache: dict[int, tuple[bytes, bytes]], name: bytes, value: int) -> tuple[bytes, bytes]:
    pair = cache.get(value)
    if pair is None:
        pair = (name, b"%d" % value)
        if len(cache) >= _PAIRS_LIMIT:
            cache.clear()
        cache[value] = pair
    return pair


def rate_limit_headers_raw(decision: RateLimitResult) -> list[tuple[bytes, bytes]]:
    """The ``RateLimit-*`` headers of an allowed decision as raw ASGI pairs (lower-case
    names): the same values as :func:`~usermgmt.http.problems.rate_limit_headers`."""
    limit = _LIMIT_PAIRS.get(decision.limit) or _pair(
        _LIMIT_PAIRS, b"ratelimit-limit", decision.limit
    )
    remaining = decision.remaining
    reset_after = decision.reset_after
    reset = math.ceil(reset_after) if reset_after > 0 else 0
    return [
        limit,
        (b"ratelimit-remaining", b"%d" % remaining if remaining > 0 else b"0"),
        _RESET_PAIRS.get(reset) or _pair(_RESET_PAIRS, b"ratelimit-reset", reset),
    ]


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


#: One record per request, written by both adapters when the request ends.
access_logger: Final = logging.getLogger("usermgmt.access")


def log_access(
    method: str, route: str, path: str, status: int, seconds: float, *, exempt: bool
) -> None:
    """The ``usermgmt.access`` record of a finished request: at INFO, or at DEBUG for the
    paths out of the global rate limit (probes and scrapes come every few seconds).
    Never the query string or a header; the caller's id comes from the logging context."""
    level = logging.DEBUG if exempt else logging.INFO
    if access_logger.isEnabledFor(level):
        access_logger.log(
            level,
            "%s %s %d",
            method,
            route,
            status,
            extra={
                "method": method,
                "route": route,
                "path": path,
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
                "user_id": current_user_id(),
            },
        )
