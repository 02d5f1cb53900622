"""Before- and after-request hooks for every request of the application.

In order, for each request (the same rules as ``usermgmt_fastapi``'s middleware, from
:mod:`usermgmt.http`):

1. **Request id**: ``X-Request-ID`` is echoed when it is a sane token, otherwise a new
   one is generated; it is sent back on every response.
2. **Global rate limit** per client (``RATE_LIMIT_*``; the client address follows
   ``TRUSTED_PROXIES``): 429 ``rate_limited`` with ``Retry-After`` when refused, and
   ``RateLimit-Limit/Remaining/Reset`` on every counted response. Every request counts,
   refused ones included; health endpoints do not, so probes never trip it.
3. **Body size**: a ``Content-Length`` above the limit (default 1 MiB) is refused with
   413 before the body is read; a chunked body is counted as it is read
   (:func:`read_body`).
4. **Security headers** on every response: ``X-Content-Type-Options: nosniff``,
   ``Referrer-Policy: no-referrer``, and ``Strict-Transport-Security`` when the request
   came over HTTPS (behind a proxy, let Werkzeug's ``ProxyFix`` set the scheme).

Unexpected exceptions become 500 problem documents in :mod:`usermgmt_flask.errors`.
"""

from __future__ import annotations

from typing import Final

from flask import Flask, Response, request
from werkzeug.exceptions import MethodNotAllowed

from usermgmt import http
from usermgmt_flask.context import BLUEPRINT_NAME, get_state, request_id
from usermgmt_flask.errors import BodyTooLarge, allowed_methods, instance, render

__all__ = ["install_hooks", "read_body"]

_RATE_HEADERS: Final = "usermgmt.rate_headers"
_BODY: Final = "usermgmt.body"
_CHUNK: Final = 64 * 1024


def _before_request() -> Response | None:
    state = get_state()
    rid = request_id()
    if not http.is_exempt(request.path, state.rate_limit_exempt):
        verdict = http.check_global_rate(
            state.um,
            request.remote_addr,
            request.headers.get("X-Forwarded-For"),
            instance=instance(),
            request_id=rid,
        )
        request.environ[_RATE_HEADERS] = verdict.headers
        if verdict.refusal is not None:
            return render(verdict.refusal)
    refusal = http.check_content_length(
        request.headers.get("Content-Length"),
        state.max_body_bytes,
        instance=instance(),
        request_id=rid,
    )
    if refusal is not None:
        return render(refusal)
    rule = request.url_rule
    if (
        request.method == "HEAD"
        and rule is not None
        and (rule.endpoint or "").startswith(BLUEPRINT_NAME + ".")
    ):
        raise MethodNotAllowed(valid_methods=allowed_methods())
    return None


def _after_request(response: Response) -> Response:
    headers = response.headers
    headers[http.REQUEST_ID_HEADER] = request_id()
    for key, value in request.environ.get(_RATE_HEADERS, {}).items():
        headers.setdefault(key, value)  # a stricter limit's own numbers win
    for key, value in http.SECURITY_HEADERS.items():
        headers.setdefault(key, value)
    if request.is_secure:
        headers.setdefault("Strict-Transport-Security", http.HSTS)
    return response


def install_hooks(app: Flask) -> None:
    """Register the hooks on ``app`` (every request, not only usermgmt's routes)."""
    app.before_request(_before_request)
    app.after_request(_after_request)


def read_body() -> bytes:
    """The request body, read at most once, counted as it arrives: a body over the
    extension's ``max_body_bytes`` raises BodyTooLarge (413) whether or not it came
    with a ``Content-Length``."""
    cached = request.environ.get(_BODY)
    if isinstance(cached, bytes):
        return cached
    limit = get_state().max_body_bytes
    stream = request.stream
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = stream.read(min(_CHUNK, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
    body = b"".join(chunks)
    request.environ[_BODY] = body
    return body
