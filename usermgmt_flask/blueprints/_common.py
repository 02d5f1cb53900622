"""What every blueprint shares: routes without Werkzeug's implicit OPTIONS, request
bodies and query strings parsed as the FastAPI adapter parses them, JSON responses.

A view with a body follows FastAPI's order, so both adapters answer the same request
with the same error: :func:`json_body` first (413, malformed JSON → 422) before
anything else, then authentication (401), then :func:`parse` / :func:`query` (422), then
the one service call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeVar

from flask import Blueprint, Response, request
from pydantic import BaseModel

from usermgmt import http
from usermgmt_flask.middleware import read_body

__all__ = [
    "accepted",
    "json_body",
    "no_content",
    "ok",
    "parse",
    "query",
    "route",
]

F = TypeVar("F", bound=Callable[..., Any])
M = TypeVar("M", bound=BaseModel)

JSON: Final = "application/json"


def route(blueprint: Blueprint, method: str, rule: str) -> Callable[[F], F]:
    """``@route(bp, "POST", "/auth/login")``: one method per view, as FastAPI declares
    them; no automatic OPTIONS answer (FastAPI has none: 405) and no redirect from a
    path with doubled slashes (FastAPI answers it 404)."""

    def register(view: F) -> F:
        blueprint.add_url_rule(
            rule,
            view_func=view,
            methods=[method],
            provide_automatic_options=False,
            merge_slashes=False,
        )
        return view

    return register


def json_body() -> Any:
    """The decoded request body (:func:`usermgmt.http.decode_json_body`).

    Raises BodyTooLarge (413) and ValidationError (422, malformed JSON).
    """
    return http.decode_json_body(read_body(), request.headers.get("Content-Type"))


def parse(model: type[M], body: Any) -> M:
    """Validate the decoded body into ``model``. Raises ValidationError (422)."""
    return http.parse_body(model, body)


def query(model: type[M]) -> M:
    """Validate the query string into ``model`` (the last value of a repeated
    parameter, unknown ones ignored). Raises ValidationError (422)."""
    return http.parse_query(model, {key: values[-1] for key, values in request.args.lists()})


def ok(model: BaseModel, status: int = 200) -> Response:
    """``model`` as the JSON response body."""
    return Response(model.model_dump_json(), status=status, mimetype=JSON)


def accepted(answer: http.AcceptedOut) -> Response:
    """202 with one of the fixed answers that reveal nothing (``usermgmt.http``)."""
    return ok(answer, 202)


def no_content() -> Response:
    """204, without a body or a content type."""
    response = Response(status=204)
    del response.headers["Content-Type"]
    return response


def no_store(response: Response) -> Response:
    """After-request hook of the usermgmt blueprint: nothing usermgmt answers may be
    cached (tokens, personal data)."""
    response.headers.setdefault("Cache-Control", "no-store")
    return response
