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
from collections.abc import Iterable, Sequence
from typing import Any, Final

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from usermgmt import http
from usermgmt.app import UserManagement
from usermgmt.backends.memory import MemoryRateLimiter
from usermgmt.http import DEFAULT_MAX_BODY_BYTES, HSTS, REQUEST_ID_HEADER, SECURITY_HEADERS
from usermgmt.observability import hooks
from usermgmt.observability.context import bind_request, current_user_id, unbind_request
from usermgmt.observability.metrics import UNMATCHED_ROUTE
from usermgmt_fastapi.errors import internal_error_response, render

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "REQUEST_ID_HEADER",
    "STATE_KEY",
    "UserMgmtMiddleware",
    "route_template",
]

logger = logging.getLogger("usermgmt.http")
access_logger = logging.getLogger("usermgmt.access")

#: Where :func:`usermgmt_fastapi.install` keeps the UserManagement: ``app.state.usermgmt``.
STATE_KEY: Final = "usermgmt"


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
_HSTS_RAW: Final = ((b"strict-transport-security", HSTS.encode("latin-1")),)


class _Served:
    """What the response of one request has shown so far (its status; whether it started)."""

    __slots__ = ("started", "status")

    def __init__(self) -> None:
        self.status = 500
        self.started = False


class _BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body is larger than {limit} bytes.")


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
        self.metrics = metrics
        self._patterns: list[tuple[str, re.Pattern[str]]] | None = None

    def _um(self, scope: Scope) -> UserManagement:
        state = getattr(scope.get("app"), "state", None)
        um = getattr(state, STATE_KEY, None)
        return um if isinstance(um, UserManagement) else self.um

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
        served = _Served()
        tokens = bind_request(request_id)
        try:
            await self._serve(
                scope, receive, send, served, request_id, forwarded_for, content_length
            )
        finally:
            self._observe(scope, served.status, time.perf_counter() - started)
            unbind_request(tokens)

    def _route(self, scope: Scope) -> str:
        if scope.get("route") is None and self._patterns is None:
            try:
                self._patterns = _path_patterns(scope.get("app"))
            except Exception:  # no usable document: every refused request is unmatched
                logger.debug("no OpenAPI document to name refused requests' routes")
                self._patterns = []
        return route_template(scope, self._patterns or ())

    def _observe(self, scope: Scope, status: int, seconds: float) -> None:
        method = str(scope.get("method", ""))
        route = self._route(scope)
        if self.metrics:
            hooks.observe_http(method, route, status, seconds)
        path = str(scope.get("path", ""))
        # Probes and scrapes come every few seconds: they are logged at DEBUG only.
        level = logging.DEBUG if http.is_exempt(path, self.exempt_prefixes) else logging.INFO
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

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        served: _Served,
        request_id: str,
        forwarded_for: str | None,
        content_length: str | None,
    ) -> None:
        um = self._um(scope)
        path: str = scope.get("path", "")
        # Added to the response unless it has them already (the request id always):
        # raw (name, value) pairs, encoded once.
        added: list[tuple[bytes, bytes]] = []
        https = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                served.status = int(message["status"])
                served.started = True
                raw: list[tuple[bytes, bytes]] = list(message.get("headers", ()))
                present = {name.lower() for name, _ in raw}
                raw = [item for item in raw if item[0].lower() != _REQUEST_ID_RAW]
                raw.append((_REQUEST_ID_RAW, request_id.encode("latin-1")))
                for item in (*added, *_SECURITY_RAW, *(_HSTS_RAW if https else ())):
                    if item[0] not in present:  # a stricter limit's own numbers win
                        present.add(item[0])
                        raw.append(item)
                message = {**message, "headers": raw}
            await send(message)

        async def refuse(reply: http.ProblemReply) -> None:
            await render(reply)(scope, receive, send_with_headers)

        # --- global rate limit ----------------------------------------------------------
        if not http.is_exempt(path, self.exempt_prefixes):
            client = scope.get("client")
            arguments = (um, client[0] if client else None, forwarded_for)
            if _in_process(um.backends.rate_limiter):  # a lock and a dict: no I/O
                verdict = http.check_global_rate(*arguments, instance=path, request_id=request_id)
            else:  # off the event loop: Redis is a network round trip
                verdict = await run_in_threadpool(
                    http.check_global_rate, *arguments, instance=path, request_id=request_id
                )
            added.extend(
                (key.lower().encode("latin-1"), value.encode("latin-1"))
                for key, value in verdict.headers.items()
            )
            if verdict.refusal is not None:
                await refuse(verdict.refusal)
                return

        # --- body size ------------------------------------------------------------------
        refusal = http.check_content_length(
            content_length,
            self.max_body_bytes,
            instance=path,
            request_id=request_id,
        )
        if refusal is not None:
            await refuse(refusal)
            return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _BodyTooLarge(self.max_body_bytes)
            return message

        # --- the application, with a last resort ----------------------------------------
        try:
            await self.app(scope, counted_receive, send_with_headers)
        except Exception as exc:
            logger.error(
                "unhandled %s",
                type(exc).__name__,
                exc_info=exc,
                extra={"request_id": request_id},
            )
            if served.started:
                raise  # the response is half sent: let the server close the connection
            response = internal_error_response(request_id, path)
            await response(scope, receive, send_with_headers)
