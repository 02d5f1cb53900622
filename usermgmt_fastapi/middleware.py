"""One pure ASGI middleware for every request of the application.

In order, for each HTTP request:

1. **Request id**: ``X-Request-ID`` is echoed when it is a sane token (at most 128
   characters of ``[A-Za-z0-9._~:+/=-]``), otherwise a new one is generated; it is
   kept in ``request.state.request_id`` and sent back on every response.
2. **Global rate limit** per client (``RATE_LIMIT_*``; the client address follows
   ``TRUSTED_PROXIES``): 429 ``rate_limited`` with ``Retry-After`` when refused, and
   ``RateLimit-Limit/Remaining/Reset`` on every counted response. Every request
   counts, refused ones included; health endpoints do not, so probes never trip it.
3. **Body size**: a ``Content-Length`` above the limit (default 1 MiB) is refused with
   413 before the body is read; a chunked body is counted as it arrives.
4. **Security headers** on every response: ``X-Content-Type-Options: nosniff``,
   ``Referrer-Policy: no-referrer``, and ``Strict-Transport-Security`` when the request
   came over HTTPS (behind a proxy, let the server set the scheme, e.g. uvicorn
   ``--proxy-headers --forwarded-allow-ips``).
5. **Last resort**: an exception nothing handled becomes a 500 problem document with
   the request id (the traceback goes to the log, never to the client).
6. **Observability**: the request id (and, once a dependency resolves the caller, the
   user id) is bound to the logging context for the whole request
   (:mod:`usermgmt.observability.context`); when the request ends its duration and
   status go to ``http_request_duration_seconds`` / ``http_requests_total`` labelled by
   the route *template* (``<unmatched>`` when no route serves the path), and one
   ``usermgmt.access`` record is logged at INFO (method, route, path, status,
   duration; never the query string or a header).
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any, Final

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from usermgmt import http
from usermgmt.app import UserManagement
from usermgmt.backends.memory import MemoryRateLimiter
from usermgmt.errors import UserMgmtError
from usermgmt.http import DEFAULT_MAX_BODY_BYTES, HSTS, REQUEST_ID_HEADER, SECURITY_HEADERS
from usermgmt.observability import hooks
from usermgmt.observability.context import bind_request, unbind_request
from usermgmt.observability.metrics import UNMATCHED_ROUTE
from usermgmt.ports import RateLimitResult
from usermgmt_fastapi.errors import internal_error_response, render
from usermgmt_fastapi.threads import run_check

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "REQUEST_ID_HEADER",
    "STATE_KEY",
    "UserMgmtMiddleware",
    "installed_um",
    "route_template",
]

logger = logging.getLogger("usermgmt.http")

#: Where :func:`usermgmt_fastapi.install` keeps the UserManagement: ``app.state.usermgmt``.
STATE_KEY: Final = "usermgmt"


def installed_um(scope: Scope) -> UserManagement | None:
    """The UserManagement kept in ``app.state`` (``STATE_KEY``) of the request's
    application, if any."""
    state = getattr(scope.get("app"), "state", None)
    # Starlette's State keeps a dict: a plain look-up there (getattr would first raise
    # and catch an AttributeError inside; this runs for every request).
    values = getattr(state, "_state", None)
    um = values.get(STATE_KEY) if type(values) is dict else getattr(state, STATE_KEY, None)
    return um if isinstance(um, UserManagement) else None


def request_id_from(headers: Headers) -> str:
    """The caller's request id when it is sane, else a fresh one."""
    return http.request_id_from(headers.get(REQUEST_ID_HEADER))


def _template_of(route: Any) -> str | None:
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return template if isinstance(template, str) else None


_PARAMETER = re.compile(r"\\\{[^}]+\\\}")


def _path_patterns(app: Any) -> list[tuple[str, re.Pattern[str]]]:
    """The application's path templates (from its OpenAPI document: a public, stable
    view of every route, prefixes included), literal ones first."""
    openapi = getattr(app, "openapi", None)
    document = openapi() if callable(openapi) else None
    paths = document.get("paths", {}) if isinstance(document, dict) else {}
    templates = sorted(paths, key=lambda path: (path.count("{"), -len(path)))
    return [
        (template, re.compile("^" + _PARAMETER.sub("[^/]+", re.escape(template)) + "$"))
        for template in templates
    ]


def route_template(scope: Scope, patterns: Sequence[tuple[str, re.Pattern[str]]] = ()) -> str:
    """The template of the route serving this request (``/users/{user_id}``), for
    metrics and logs: the one routing chose, else (a request refused before routing)
    the first of ``patterns`` matching the path, else ``<unmatched>``."""
    template = _template_of(scope.get("route"))
    if template is not None:
        return template
    path = str(scope.get("path", ""))
    for candidate, pattern in patterns:
        if pattern.match(path):
            return candidate
    return UNMATCHED_ROUTE


def _in_process(limiter: object) -> bool:
    """Whether ``limiter`` counts in this process only (never blocks on I/O), so the
    global rate check may run on the event loop: a :class:`MemoryRateLimiter`, or a
    Redis failover wrapper whose shared limiter is itself in-process. Anything else
    (Redis, an unknown limiter) is checked in the threadpool."""
    if type(limiter) is MemoryRateLimiter:
        return True
    failover = sys.modules.get("usermgmt.backends.redis.fallback")  # loaded if Redis is used
    if failover is not None and type(limiter) is failover.FailoverRateLimiter:
        wrapper: Any = limiter
        return _in_process(wrapper.primary) and _in_process(wrapper.fallback)
    return False


_REQUEST_ID_RAW: Final = REQUEST_ID_HEADER.lower().encode("latin-1")
_SECURITY_RAW: Final = tuple(
    (key.lower().encode("latin-1"), value.encode("latin-1"))
    for key, value in SECURITY_HEADERS.items()
)
_HSTS_SECURITY_RAW: Final = (
    *_SECURITY_RAW,
    (b"strict-transport-security", HSTS.encode("latin-1")),
)
#: Every header name this middleware may add: when a response has none of them (the
#: usual case) ours are appended in one concatenation, without looking further.
_OURS: Final = frozenset(
    {_REQUEST_ID_RAW, *(name for name, _ in _HSTS_SECURITY_RAW)}
    | {b"ratelimit-limit", b"ratelimit-remaining", b"ratelimit-reset", b"retry-after"}
)


class _BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body is larger than {limit} bytes.")


class _Exchange:
    """One request in flight: what the response has shown so far (its status, whether
    it started), the headers to add to it, and the wrapped ``send`` and ``receive``."""

    __slots__ = ("added", "max_body", "receive_", "received", "send_", "started", "status")

    def __init__(self, send: Send, receive: Receive, max_body: int) -> None:
        self.send_ = send
        self.receive_ = receive
        self.max_body = max_body
        self.status = 500
        self.started = False
        self.received = 0
        #: Added to the response unless it has them already (the request id always),
        #: in this order: request id, ``RateLimit-*`` (if any), security headers.
        self.added: list[tuple[bytes, bytes]] = []

    def send(self, message: Message) -> Awaitable[None]:
        """The wrapped ``send`` (a plain function returning its awaitable: no coroutine
        of its own per message)."""
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            self.started = True
            headers = message.get("headers") or ()
            if type(headers) is not list and type(headers) is not tuple:
                headers = list(headers)  # any iterable (ASGI): it is read twice below
            for item in headers:
                if item[0].lower() in _OURS:
                    raw = self._merged(headers)
                    break
            else:
                raw = [*headers, *self.added]
            message = {**message, "headers": raw}
        return self.send_(message)

    def _merged(self, headers: Iterable[Sequence[bytes]]) -> list[tuple[bytes, bytes]]:
        """The response's headers and ours, when it has some of ours: its request id is
        replaced; any other header of ours it has wins (a stricter limit's numbers)."""
        raw: list[tuple[bytes, bytes]] = []
        present: set[bytes] = set()
        for item in headers:
            name = item[0].lower()
            if name != _REQUEST_ID_RAW:
                raw.append((item[0], item[1]))
                present.add(name)
        raw.extend(item for item in self.added if item[0] not in present)
        return raw

    async def receive(self) -> Message:
        """The request's messages, the body counted as it arrives."""
        message = await self.receive_()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.max_body:
                raise _BodyTooLarge(self.max_body)
        return message


class UserMgmtMiddleware:
    """See the module docstring. ``exempt_prefixes``: paths never rate-limited.

    The UserManagement served is the application's (``app.state.usermgmt``, set by
    :func:`usermgmt_fastapi.install`), so the middleware and the routes always agree;
    ``um`` is the fallback for an application without that state. ``metrics=False``
    records no HTTP metrics.
    """

    def __init__(
        self,
        app: ASGIApp,
        um: UserManagement,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        exempt_prefixes: Iterable[str] = ("/health", "/metrics"),
        metrics: bool = True,
    ) -> None:
        self.app = app
        self.um = um
        self.max_body_bytes = max_body_bytes
        self.exempt_prefixes = tuple(exempt_prefixes)
        self._exempt = http.exemption(self.exempt_prefixes)
        self.metrics = metrics
        self._patterns: list[tuple[str, re.Pattern[str]]] | None = None

    def _um(self, scope: Scope) -> UserManagement:
        um = installed_um(scope)
        return um if um is not None else self.um

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        # The three request headers used here, in one pass (no Headers object).
        given_id = forwarded_for = content_length = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                given_id = value.decode("latin-1") if given_id is None else given_id
            elif name == b"x-forwarded-for":
                forwarded_for = value.decode("latin-1") if forwarded_for is None else forwarded_for
            elif name == b"content-length":
                content_length = (
                    value.decode("latin-1") if content_length is None else content_length
                )
        request_id = http.request_id_from(given_id)
        scope.setdefault("state", {})["request_id"] = request_id
        exchange = _Exchange(send, receive, self.max_body_bytes)
        path: str = scope.get("path", "")
        exempt = self._exempt(path)
        token = bind_request(request_id)
        try:
            refusal = None
            rate: list[tuple[bytes, bytes]] = []
            # --- global rate limit --------------------------------------------------------
            if not exempt:
                um = self._um(scope)
                client = scope.get("client")
                peer = client[0] if client else None
                outcome: RateLimitResult | UserMgmtError | None
                if _in_process(um.backends.rate_limiter):  # a lock and a dict: no I/O
                    outcome = http.count_global_rate(um, peer, forwarded_for)
                else:  # off the event loop: Redis is a network round trip
                    outcome = await run_check(
                        um.settings.http_check_threads,
                        http.count_global_rate,
                        um,
                        peer,
                        forwarded_for,
                    )
                if type(outcome) is RateLimitResult and outcome.allowed:  # the usual answer
                    rate = http.rate_limit_headers_raw(outcome)
                else:
                    rate, refusal = self._refused(outcome, path, request_id)
            # Every response carries these (one list, built once per request).
            exchange.added = [
                (_REQUEST_ID_RAW, request_id.encode("latin-1")),
                *rate,
                *(_HSTS_SECURITY_RAW if scope.get("scheme") == "https" else _SECURITY_RAW),
            ]
            # --- body size ----------------------------------------------------------------
            if refusal is None and content_length is not None:
                refusal = http.check_content_length(
                    content_length, self.max_body_bytes, instance=path, request_id=request_id
                )
            if refusal is not None:
                await render(refusal)(scope, receive, exchange.send)
            else:
                # --- the application, with a last resort ----------------------------------
                try:
                    await self.app(scope, exchange.receive, exchange.send)
                except Exception as exc:
                    logger.error(
                        "unhandled %s",
                        type(exc).__name__,
                        exc_info=exc,
                        extra={"request_id": request_id},
                    )
                    if exchange.started:
                        raise  # the response is half sent: let the server close the connection
                    response = internal_error_response(request_id, path)
                    await response(scope, exchange.receive_, exchange.send)
        finally:
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path_format", None)  # the usual answer
            if type(route) is not str or not route:
                route = self._route(scope)
            method: str = scope.get("method", "")
            if self.metrics:
                hooks.observe_http(method, route, exchange.status, seconds)
            http.log_access(method, route, path, exchange.status, seconds, exempt=exempt)
            unbind_request(token)

    @staticmethod
    def _refused(
        outcome: RateLimitResult | UserMgmtError | None, path: str, request_id: str
    ) -> tuple[list[tuple[bytes, bytes]], http.ProblemReply | None]:
        """The ``RateLimit-*`` headers and the refusal of an outcome of the global rate
        limit that is not a plain allowance (refused, failed, or not counted)."""
        verdict = http.global_rate_verdict(outcome, instance=path, request_id=request_id)
        headers = [
            (key.lower().encode("latin-1"), value.encode("latin-1"))
            for key, value in verdict.headers.items()
        ]
        return headers, verdict.refusal

    def _route(self, scope: Scope) -> str:
        if scope.get("route") is None and self._patterns is None:
            try:
                self._patterns = _path_patterns(scope.get("app"))
            except Exception:  # no usable document: every refused request is unmatched
                logger.debug("no OpenAPI document to name refused requests' routes")
                self._patterns = []
        return route_template(scope, self._patterns or ())
