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
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterable
from typing import Final

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from usermgmt.app import UserManagement
from usermgmt.errors import UserMgmtError
from usermgmt_fastapi.errors import (
    internal_error_response,
    problem_response,
    rate_limit_headers,
    status_for,
)

__all__ = ["DEFAULT_MAX_BODY_BYTES", "REQUEST_ID_HEADER", "STATE_KEY", "UserMgmtMiddleware"]

logger = logging.getLogger("usermgmt.http")

DEFAULT_MAX_BODY_BYTES: Final = 1024 * 1024
REQUEST_ID_HEADER: Final = "X-Request-ID"
#: Where :func:`usermgmt_fastapi.install` keeps the UserManagement: ``app.state.usermgmt``.
STATE_KEY: Final = "usermgmt"
HSTS: Final = "max-age=63072000; includeSubDomains"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._~:+/=-]{1,128}$")


def request_id_from(headers: Headers) -> str:
    """The caller's request id when it is sane, else a fresh one."""
    given = headers.get(REQUEST_ID_HEADER)
    if given is not None and _REQUEST_ID.match(given):
        return given
    return uuid.uuid4().hex


class _BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body is larger than {limit} bytes.")


class UserMgmtMiddleware:
    """See the module docstring. ``exempt_prefixes``: paths never rate-limited.

    The UserManagement served is the application's (``app.state.usermgmt``, set by
    :func:`usermgmt_fastapi.install`), so the middleware and the routes always agree;
    ``um`` is the fallback for an application without that state.
    """

    def __init__(
        self,
        app: ASGIApp,
        um: UserManagement,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        exempt_prefixes: Iterable[str] = ("/health",),
    ) -> None:
        self.app = app
        self.um = um
        self.max_body_bytes = max_body_bytes
        self.exempt_prefixes = tuple(exempt_prefixes)

    def _um(self, scope: Scope) -> UserManagement:
        state = getattr(scope.get("app"), "state", None)
        um = getattr(state, STATE_KEY, None)
        return um if isinstance(um, UserManagement) else self.um

    def _exempt(self, path: str) -> bool:
        return any(path == p or path.startswith(p.rstrip("/") + "/") for p in self.exempt_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        um = self._um(scope)
        headers = Headers(scope=scope)
        request_id = request_id_from(headers)
        scope.setdefault("state", {})["request_id"] = request_id
        path: str = scope.get("path", "")
        extra_headers: dict[str, str] = {}
        https = scope.get("scheme") == "https"
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                out = MutableHeaders(scope=message)
                out[REQUEST_ID_HEADER] = request_id
                for key, value in extra_headers.items():
                    out.setdefault(key, value)  # a stricter limit's own numbers win
                out.setdefault("X-Content-Type-Options", "nosniff")
                out.setdefault("Referrer-Policy", "no-referrer")
                if https:
                    out.setdefault("Strict-Transport-Security", HSTS)
            await send(message)

        async def refuse(status: int, code: str, detail: str, **more: str) -> None:
            extra_headers.update(more)
            response = problem_response(
                status, code, detail=detail, instance=path, request_id=request_id
            )
            await response(scope, receive, send_with_headers)

        # --- global rate limit ----------------------------------------------------------
        if not self._exempt(path):
            client = scope.get("client")
            peer = client[0] if client else None
            address = um.client_ip(peer, headers.get("x-forwarded-for"))
            try:
                # off the event loop: with Redis this is a network round trip
                decision = await run_in_threadpool(um.check_request_rate, address)
            except UserMgmtError as exc:
                await refuse(status_for(exc), exc.code, exc.title)
                return
            if decision is not None:
                extra_headers.update(
                    rate_limit_headers(decision.limit, decision.remaining, decision.reset_after)
                )
                if not decision.allowed:
                    await refuse(
                        429,
                        "rate_limited",
                        "Too many requests; try again later.",
                        **rate_limit_headers(
                            decision.limit,
                            0,
                            decision.reset_after,
                            retry_after=decision.reset_after,
                        ),
                    )
                    return

        # --- body size ------------------------------------------------------------------
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                await refuse(400, "bad_request", "Invalid Content-Length header.")
                return
            if int(length) > self.max_body_bytes:
                await refuse(
                    413,
                    "payload_too_large",
                    f"The request body is larger than {self.max_body_bytes} bytes.",
                )
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
            if started:
                raise  # the response is half sent: let the server close the connection
            response = internal_error_response(request_id, path)
            await response(scope, receive, send_with_headers)
