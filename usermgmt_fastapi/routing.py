"""Cheap routing past usermgmt's routes: :func:`gated`.

FastAPI tries an application's routes in order, and from 0.1xx on an included router is
matched route by route each time (the context of the inclusion is rebuilt for every
candidate), so every request to a route declared after :func:`usermgmt_fastapi.mount`
used to pay for trying all of usermgmt's ~60 routes first: a third of the time of a
small authenticated route. A router wrapped by :func:`gated` first compares the path
with the literal first segments of its routes (``/auth``, ``/users``, ...) and answers
"no match" at once when none fits; otherwise FastAPI matches as usual. The gate only
ever says "no" for a path none of its routes could match, full or partial (a partial
match is a 405), so routing decisions are unchanged. FastAPI versions that copy an
included router's routes into the application never ask the gate: nothing changes there.

"""

from __future__ import annotations

from typing import Any, Final

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.routing import Match
from starlette.types import Scope

__all__ = ["gated"]


def _first_segment(path: str) -> str | None:
    """``/auth`` for ``/auth/login``; None when the first segment is a parameter or the
    path is ``/`` (such a route could match anything: no gate then)."""
    segment = path.split("/", 2)[1] if path.startswith("/") else ""
    if not segment or "{" in segment:
        return None
    return "/" + segment


def _route_path(scope: Scope) -> str:
    """The path routing sees (Starlette's rule: below ``root_path`` when under it)."""
    path: str = scope.get("path", "")
    root_path: str = scope.get("root_path", "")
    if (
        root_path
        and path.startswith(root_path)
        and path[len(root_path) : len(root_path) + 1] == "/"
    ):
        return path[len(root_path) :]
    return path


def _segment_below(path: str, prefix: str) -> str | None:
    """The first segment of ``path`` below ``prefix`` (``/users`` for ``/api/users/me``
    under ``/api``), or None when ``path`` is not below ``prefix``."""
    if not path.startswith(prefix):
        return None
    rest = path[len(prefix) :]
    if not rest.startswith("/"):
        return None
    end = rest.find("/", 1)
    return rest if end < 0 else rest[:end]


#: Where a request's first segments are kept for the next gate (``scope`` key).
_SEGMENTS_KEY: Final = "usermgmt.gate"


class _GatedRouter(APIRouter):
    """An APIRouter holding one router's routes, behind a check of the path's first
    segment."""

    _prefix: str = ""
    _segments: frozenset[str] | None = None  # None: no gate

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        segments = self._segments
        if segments is not None:
            # The first segments of the request (below the root path and as sent) are
            # computed once per request: every gated router of the app asks.
            raw: str = scope.get("path", "")
            root_path: str = scope.get("root_path", "")
            prefix = self._prefix
            seen = scope.get(_SEGMENTS_KEY)
            if seen is None or seen[0] is not raw or seen[1] != root_path or seen[2] != prefix:
                seen = (
                    raw,
                    root_path,
                    prefix,
                    _segment_below(_route_path(scope), prefix),
                    _segment_below(raw, prefix),
                )
                scope[_SEGMENTS_KEY] = seen
            if seen[3] not in segments and seen[4] not in segments:
                return Match.NONE, {}
        return super().matches(scope)


def _segments_of(router: APIRouter) -> frozenset[str] | None:
    """The literal first segments of ``router``'s routes; None when one of them has
    none (a parameter, ``/``, or not a route with a path)."""
    segments: set[str] = set()
    for route in router.routes:
        path: Any = getattr(route, "path", None)
        segment = _first_segment(path) if isinstance(path, str) else None
        if segment is None:
            return None
        segments.add(segment)
    return frozenset(segments)


def gated(router: APIRouter, prefix: str = "") -> APIRouter:
    """A router with ``router``'s routes that rejects at once the paths whose first
    segment (after ``prefix``, the prefix the result will be included with) none of
    them has. A router with a route whose first segment is a parameter is not gated.

    When every route of ``router`` is an APIRoute declared on it (``@router.get`` ...:
    its prefix, tags, responses and dependencies are the route's own), the gate holds
    the routes themselves; otherwise it includes ``router``. (Each level of inclusion
    costs FastAPI a match per request.)"""
    segments = _segments_of(router)
    if segments is None:
        return router
    gate = _GatedRouter()
    if all(type(route) is APIRoute for route in router.routes):
        gate.routes.extend(router.routes)
    else:
        gate.include_router(router)
    gate._prefix = prefix
    gate._segments = segments
    return gate
