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
by one check instead of one per router (each costs FastAPI ~15 µs per request).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute
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


def _gate(segments: frozenset[str], prefix: str) -> _GatedRouter:
    gate = _GatedRouter()
    gate._prefix = prefix
    gate._segments = segments
    return gate


def gated(router: APIRouter, prefix: str = "") -> APIRouter:
    """``router`` inside a router that rejects at once the paths whose first segment
    (after ``prefix``, the prefix the result will be included with) none of its routes
    has. A router with a route whose first segment is a parameter is not gated."""
    segments = _segments_of(router)
    if segments is None:
        return router
    gate = _gate(segments, prefix)
    gate.include_router(router)
    return gate


def gated_together(routers: Sequence[APIRouter], prefix: str = "") -> list[APIRouter]:
    """The routers to include (in order, each with ``prefix``) for ``routers``: one
    router behind a gate of all their first segments, holding for each of them a gated
    router with its routes (the routes themselves, not an inclusion of the router:
    each level of inclusion costs FastAPI a match per request); or, when one of them
    has a route whose first segment is a parameter, each of them :func:`gated`.

    Only for routers whose routes were declared on them (``@router.get`` ...): their
    prefix, tags, responses and dependencies are already each route's own."""
    gates: list[_GatedRouter] = []
    for router in routers:
        segments = _segments_of(router)
        if segments is None or any(not isinstance(r, APIRoute) for r in router.routes):
            return [gated(router, prefix) for router in routers]
        gate = _gate(segments, prefix)
        gate.routes.extend(router.routes)
        gates.append(gate)
    together = _gate(frozenset().union(*(gate._segments or () for gate in gates)), prefix)
    for gate in gates:
        together.include_router(gate)
    return [together]


def _adopted(router: APIRouter, prefix: str) -> APIRouter:  # H2TMP
    segments = _segments_of(router)
    assert segments is not None
    gate = _gate(segments, prefix)
    gate.routes.extend(router.routes)
    return gate


def _flat(routers: Sequence[APIRouter], prefix: str) -> list[APIRouter]:  # H2TMP
    segs: set[str] = set()
    gate = _GatedRouter()
    for router in routers:
        s = _segments_of(router)
        assert s is not None
        segs |= s
        gate.routes.extend(router.routes)
    gate._prefix = prefix
    gate._segments = frozenset(segs)
    return [gate]


class _FrozenGate(_GatedRouter):  # H2TMP
    def _get_routes_version(self, *args: Any, **kwargs: Any) -> int:
        return self._routes_version


def _together2(routers: Sequence[APIRouter], prefix: str) -> list[APIRouter]:  # H2TMP
    gates = [_adopted(r, prefix) for r in routers]
    t = _FrozenGate()
    segs: set[str] = set()
    for g in gates:
        segs |= g._segments  # type: ignore[attr-defined]
        t.include_router(g)
    t._prefix = prefix
    t._segments = frozenset(segs)
    return [t]
