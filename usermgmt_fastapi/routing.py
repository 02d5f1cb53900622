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

:func:`gated_together` puts several gated routers behind one more gate (the union of
their segments), so that a request to one of the application's own routes is refused
by one check instead of one per router.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter
from starlette.routing import Match
from starlette.types import Scope

__all__ = ["gated", "gated_together"]


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


class _GatedRouter(APIRouter):
    """An APIRouter including one router, behind a check of the path's first segment."""

    _prefix: str = ""
    _segments: frozenset[str] | None = None  # None: no gate

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        segments = self._segments
        if segments is not None:
            raw: str = scope.get("path", "")
            routed = _route_path(scope)
            if (
                _segment_below(routed, self._prefix) not in segments
                and _segment_below(raw, self._prefix) not in segments
            ):
                return Match.NONE, {}
        return super().matches(scope)


def gated(router: APIRouter, prefix: str = "") -> APIRouter:
    """``router`` inside a router that rejects at once the paths whose first segment
    (after ``prefix``, the prefix the result will be included with) none of its routes
    has. A router with a route whose first segment is a parameter is not gated."""
    segments: set[str] = set()
    for route in router.routes:
        path: Any = getattr(route, "path", None)
        segment = _first_segment(path) if isinstance(path, str) else None
        if segment is None:
            return router
        segments.add(segment)
    gate = _GatedRouter()
    gate.include_router(router)
    gate._prefix = prefix
    gate._segments = frozenset(segments)
    return gate


def gated_together(routers: Sequence[APIRouter], prefix: str = "") -> list[APIRouter]:
    """The routers to include (in order, each with ``prefix``) for ``routers``: one
    router holding each of them :func:`gated`, behind a gate of all their segments, or
    (when one of them cannot be gated) each of them gated on its own."""
    inner = [gated(router, prefix) for router in routers]
    segments: set[str] = set()
    for router in inner:
        if not isinstance(router, _GatedRouter) or router._segments is None:
            return inner
        segments |= router._segments
    gate = _GatedRouter()
    for router in inner:
        gate.include_router(router)
    gate._prefix = prefix
    gate._segments = frozenset(segments)
    return [gate]
