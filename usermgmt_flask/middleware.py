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
5. **Observability**: the request id (and, once the caller is resolved, the user id)
   is bound to the logging context until the request is torn down
   (:mod:`usermgmt.observability.context`); each response's duration and status go to
   ``http_request_duration_seconds`` / ``http_requests_total`` labelled by the route
   *template* in the FastAPI form (``/users/{user_id}``; ``<unmatched>`` when no rule
   serves the path), and one ``usermgmt.access`` record is logged at INFO (DEBUG for
   health and metrics).

Unexpected exceptions become 500 problem documents in :mod:`usermgmt_flask.errors`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Final

from flask import Flask, Response, current_app, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from usermgmt import http
from usermgmt.observability import hooks
from usermgmt.observability.context import bind_request, unbind_request
from usermgmt.observability.metrics import UNMATCHED_ROUTE
from usermgmt.ports import RateLimitResult
from usermgmt_flask.context import BLUEPRINT_NAME, UserMgmtState, get_state, request_id
from usermgmt_flask.errors import BodyTooLarge, allowed_methods, instance, render

__all__ = ["install_hooks", "read_body", "route_template"]


_RATE_HEADERS: Final = "usermgmt.rate_headers"
_BODY: Final = "usermgmt.body"
_STARTED: Final = "usermgmt.started"
_LOG_CONTEXT: Final = "usermgmt.log_context"
_CHUNK: Final = 64 * 1024
_RULE_PARAMETER: Final = re.compile(r"<(?:[^<>:]+:)?([^<>:]+)>")


def _template(rule: str) -> str:
    """A Werkzeug rule in the FastAPI form: ``/users/<user_id>`` → ``/users/{user_id}``."""
    template = _TEMPLATES.get(rule)
    if template is None:
        template = _RULE_PARAMETER.sub(r"{\1}", rule)
        if len(_TEMPLATES) < 4096:  # rules are few; the bound is a safety net
            _TEMPLATES[rule] = template
    return template


_TEMPLATES: dict[str, str] = {}


def route_template() -> str:
    """The template of the rule serving this request, for metrics and logs: the rule
    Werkzeug matched, else (wrong method) a rule serving the path with another method,
    else ``<unmatched>``."""
    rule = request.url_rule
    if rule is not None:
        return _template(rule.rule)
    error = request.routing_exception
    if isinstance(error, MethodNotAllowed) and error.valid_methods:
        adapter = current_app.create_url_adapter(request)
        if adapter is not None:
            try:
                matched, _ = adapter.match(
                    request.path, method=sorted(error.valid_methods)[0], return_rule=True
                )
            except HTTPException:
                return UNMATCHED_ROUTE
            return _template(matched.rule)
    return UNMATCHED_ROUTE


def _bind_context() -> None:
    """First hook of every request: the clock starts, the logging context is bound."""
    request.environ[_STARTED] = time.perf_counter()
    request.environ[_LOG_CONTEXT] = bind_request(request_id())


def _unbind_context(_error: BaseException | None) -> None:
    tokens = request.environ.pop(_LOG_CONTEXT, None)
    if tokens is not None:
        try:
            unbind_request(tokens)
        except ValueError:  # torn down in another context than it was bound in
            bind_request(None)


def _observe(response: Response) -> None:
    state = get_state()
    started = request.environ.get(_STARTED)
    seconds = time.perf_counter() - started if isinstance(started, float) else 0.0
    method, route, status = request.method, route_template(), response.status_code
    if state.metrics:
        hooks.observe_http(method, route, status, seconds)
    # Probes and scrapes (out of the global rate limit) are logged at DEBUG only.
    exempt = _exempt(state, request.path)
    http.log_access(
        method, route, request.script_root + request.path, status, seconds, exempt=exempt
    )


def _before_request() -> Response | None:
    state = get_state()
    rid = request_id()
    environ = request.environ
    if not _exempt(state, request.path):
        outcome = http.count_global_rate(
            state.um, request.remote_addr, environ.get("HTTP_X_FORWARDED_FOR")
        )
        if type(outcome) is RateLimitResult and outcome.allowed:  # the usual answer
            environ[_RATE_HEADERS] = outcome
        else:
            verdict = http.global_rate_verdict(outcome, instance=instance(), request_id=rid)
            environ[_RATE_HEADERS] = verdict.headers
            if verdict.refusal is not None:
                return render(verdict.refusal)
    content_length = environ.get("CONTENT_LENGTH")  # request.headers["Content-Length"]
    if content_length is not None:
        refusal = http.check_content_length(
            content_length, state.max_body_bytes, instance=instance(), request_id=rid
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
    # Added unless the response has them already (a stricter limit's own numbers win):
    # the names present are collected once, instead of a scan per header.
    present = {key.lower() for key, _ in headers.items()}
    rate = request.environ.get(_RATE_HEADERS)
    if isinstance(rate, RateLimitResult):
        rate = http.rate_limit_headers(rate.limit, rate.remaining, rate.reset_after)
    for key, value in (rate or {}).items():
        if key.lower() not in present:
            headers.add(key, value)
    for key, lower, value in _SECURITY_HEADERS:
        if lower not in present:
            headers.add(key, value)
    if request.is_secure and "strict-transport-security" not in present:
        headers.add("Strict-Transport-Security", http.HSTS)
    _observe(response)
    return response


_SECURITY_HEADERS: Final = tuple(
    (key, key.lower(), value) for key, value in http.SECURITY_HEADERS.items()
)


def _exempt(state: UserMgmtState, path: str) -> bool:
    """Whether ``path`` is out of the global rate limit (``rate_limit_exempt``)."""
    prefixes = state.rate_limit_exempt
    test = _EXEMPTIONS.get(prefixes)
    if test is None:
        test = _EXEMPTIONS[prefixes] = http.exemption(prefixes)
    return test(path)


_EXEMPTIONS: dict[tuple[str, ...], Callable[[str], bool]] = {}


def install_hooks(app: Flask) -> None:
    """Register the hooks on ``app`` (every request, not only usermgmt's routes)."""
    app.before_request_funcs.setdefault(None, []).insert(0, _bind_context)
    app.before_request(_before_request)
    app.after_request(_after_request)
    app.teardown_request(_unbind_context)


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
