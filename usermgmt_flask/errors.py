"""Errors over HTTP for Flask: every error becomes an RFC 9457 problem document.

The table (error class → status) and the documents are :mod:`usermgmt.http`'s, shared
with the FastAPI adapter; this module registers the handlers that render them:

* core errors (:class:`~usermgmt.errors.UserMgmtError`) through the table;
* Werkzeug's HTTP errors (unknown route 404, wrong method 405 with ``Allow``, 413, a
  ``BadRequest`` while reading the request) with their status, never an HTML page;
* anything unexpected as a generic 500 with the request id: the traceback goes to the
  log, never to the client. Flask's own rule applies first, so with
  ``PROPAGATE_EXCEPTIONS`` (testing, debug) the exception propagates instead.

As under FastAPI, a path that differs from a usermgmt route only by a trailing slash is
redirected (307) to the route, and usermgmt routes answer HEAD and OPTIONS with 405
(Werkzeug would add both to every rule).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Final

from flask import Flask, Response, current_app, request
from werkzeug.exceptions import (
    HTTPException,
    InternalServerError,
    MethodNotAllowed,
    NotFound,
    RequestEntityTooLarge,
)
from werkzeug.routing import MapAdapter

from usermgmt import http
from usermgmt.errors import UserMgmtError
from usermgmt_flask.context import BLUEPRINT_NAME, request_id

__all__ = [
    "BodyTooLarge",
    "allowed_methods",
    "error_response",
    "install_error_handlers",
    "instance",
    "is_usermgmt_path",
    "render",
]

logger = logging.getLogger("usermgmt.http")

_SAFE_HEADER_VALUE = re.compile(r"^[\x20-\x7e]*$")
#: Methods Werkzeug adds to rules by itself; usermgmt routes answer them 405.
IMPLICIT_METHODS: Final = frozenset({"HEAD", "OPTIONS"})


class BodyTooLarge(RequestEntityTooLarge):
    """The request body is over the extension's ``max_body_bytes`` (413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(description=f"The request body is larger than {limit} bytes.")


def render(reply: http.ProblemReply) -> Response:
    """A problem document as a Flask response."""
    return Response(
        reply.content(),
        status=reply.status,
        headers=reply.headers,
        mimetype=http.PROBLEM_MEDIA_TYPE,
    )


def instance() -> str:
    """The problem's ``instance``: the request path, mount point included."""
    return request.script_root + request.path


def error_response(error: UserMgmtError) -> Response:
    """The problem document of a core error, for the current request."""
    return render(http.error_problem(error, instance=instance(), request_id=request_id()))


# --- routing helpers ---------------------------------------------------------------------


def _url_adapter() -> MapAdapter | None:
    return current_app.create_url_adapter(request)


def _usermgmt_endpoint(adapter: MapAdapter, path: str, method: str) -> bool | None:
    """Whether ``method path`` is a usermgmt route (None: no route answers it)."""
    try:
        rule, _ = adapter.match(path, method=method, return_rule=True)
    except HTTPException:
        return None
    endpoint: str = rule.endpoint
    return endpoint.startswith(BLUEPRINT_NAME + ".")


def is_usermgmt_path(path: str) -> bool:
    """Whether some usermgmt route is served at ``path`` (any method)."""
    adapter = _url_adapter()
    if adapter is None:
        return False
    return any(
        _usermgmt_endpoint(adapter, path, method)
        for method in adapter.allowed_methods(path)
        if method not in IMPLICIT_METHODS
    )


def allowed_methods(valid: Iterable[str] | None = None) -> list[str]:
    """What ``Allow`` lists for this request's path: the methods Werkzeug found valid
    (by default, every method some rule serves there), without the HEAD and OPTIONS it
    added by itself to usermgmt routes."""
    adapter = _url_adapter()
    if valid is None:
        valid = adapter.allowed_methods(request.path) if adapter is not None else ()
    methods: list[str] = []
    for method in sorted(set(valid)):
        if method in IMPLICIT_METHODS and adapter is not None:
            usermgmt = _usermgmt_endpoint(adapter, request.path, method)
            if usermgmt is None or usermgmt:
                continue
        methods.append(method)
    return methods


def _slash_redirect() -> Response | None:
    """307 to the usermgmt route this path names with a trailing slash (as Starlette's
    ``redirect_slashes``), else None."""
    path = request.path
    if path == "/" or not path.endswith("/"):
        return None
    target = path.rstrip("/")
    if not target or not is_usermgmt_path(target):
        return None
    location = request.root_url.rstrip("/") + target
    if request.query_string:
        location += "?" + request.query_string.decode("latin-1")
    response = Response(status=307, headers={"Location": location})
    del response.headers["Content-Type"]
    return response


# --- handlers ------------------------------------------------------------------------------


def _on_usermgmt_error(error: UserMgmtError) -> Response:
    return error_response(error)


def _on_http_exception(exc: HTTPException) -> Response | HTTPException:
    status = exc.code
    if status is None:  # pragma: no cover - not an error (Flask passes these through)
        return exc
    rid = request_id()
    if isinstance(exc, InternalServerError) and exc.original_exception is not None:
        error = exc.original_exception
        logger.error(
            "unhandled %s", type(error).__name__, exc_info=error, extra={"request_id": rid}
        )
        return render(http.internal_error_problem(rid, instance()))
    if isinstance(exc, NotFound) and exc is request.routing_exception:
        redirect = _slash_redirect()
        if redirect is not None:
            return redirect
    headers = {
        key: value
        for key, value in exc.get_headers()
        if key.lower() != "content-type" and _SAFE_HEADER_VALUE.match(value)
    }
    if isinstance(exc, MethodNotAllowed):
        headers["Allow"] = ", ".join(allowed_methods(exc.valid_methods or ()))
    # Werkzeug's descriptions are prose for HTML pages: the detail is the status phrase,
    # as under FastAPI, except for the body limit's own explanation.
    detail = exc.description if isinstance(exc, BodyTooLarge) else None
    return render(
        http.http_problem(
            status, detail=detail, instance=instance(), request_id=rid, headers=headers
        )
    )


def install_error_handlers(app: Flask) -> None:
    """Render every error of ``app`` as a problem document (see the module docstring)."""
    app.register_error_handler(UserMgmtError, _on_usermgmt_error)
    app.register_error_handler(HTTPException, _on_http_exception)
