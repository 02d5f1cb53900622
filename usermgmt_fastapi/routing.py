"""Cheap routing past usermgmt's routes: :func:`gated` and :func:`gated_routers`.

FastAPI tries an application's routes in order, and from 0.1xx on an included router is
matched route by route each time (the context of the inclusion is rebuilt for every
candidate), so every request to a route declared after :func:`usermgmt_fastapi.mount`
used to pay for trying all of usermgmt's ~60 routes first: a third of the time of a
small authenticated route.

A router wrapped by :func:`gated` first compares the path with the literal beginnings of
its routes' paths (``/auth/login``, ``/users/``, ... : a route's path up to its first
parameter, after the prefix it is included with) and answers "no match" at once when
none fits; otherwise FastAPI matches as usual. A route's path pattern starts with that
literal text, so the gate only ever says "no" for a path none of its routes could match,
full or partial (a partial match is a 405): routing decisions are unchanged.

:func:`gated_routers` (what :func:`usermgmt_fastapi.mount` uses) puts several gated
routers inside one gate of all their beginnings, so that a path of the application
costs one check rather than one per router. Behind it, the gate tries only the routers
whose own gate lets the path through and hands the request to the one that matched
without FastAPI matching it a second time.

FastAPI's inclusion of a gate, once the gate has applied to it, checks the path by itself
(:func:`_gated_inclusion`: the first segment against those of the gate's routes), so a
path of the application costs one call, not FastAPI's bookkeeping around the gate's.

FastAPI versions that copy an included router's routes into the application never ask
the gates: nothing changes there (the routes are copied with the same paths, tags,
responses and dependencies). The gates and the shortcuts use FastAPI's inclusion
internals only when those are there with the shape expected (:func:`_lazy_internals`);
otherwise nothing is gated and FastAPI matches as usual.

A gate rejects a path only for an inclusion with the prefix it was built for (FastAPI
names the inclusion being matched): nested in a router with a prefix, or included with
another prefix, it lets every path through. A route added to a gate (or a router
included in it) after it was built opens it and the gates around it for good; so does
a change FastAPI sees below a gate that includes a router of its own settings.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterable
from typing import Any, Final

import fastapi.routing
from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.routing import Match, Mount, Route, WebSocketRoute
from starlette.types import Receive, Scope, Send


def _fields(cls: Any) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()


def _lazy_internals() -> tuple[Any, Callable[[Scope], Any] | None]:
    """FastAPI's inclusion class and its "inclusion being matched" lookup, when they have
    the shape the gates use (a dataclass with ``original_router`` and an
    ``include_context`` that has a ``prefix``, ``effective_candidates()``, a lookup
    taking the scope alone); else (None, None): the gates then leave routing to FastAPI.
    """
    inclusion = getattr(fastapi.routing, "_IncludedRouter", None)
    lookup = getattr(fastapi.routing, "_get_scope_included_router", None)
    context = getattr(fastapi.routing, "_RouterIncludeContext", None)
    if not isinstance(inclusion, type) or not callable(lookup):
        return None, None
    if not {"original_router", "include_context"} <= _fields(inclusion):
        return None, None
    if "prefix" not in _fields(context) or not callable(
        getattr(inclusion, "effective_candidates", None)
    ):
        return None, None
    try:
        inspect.signature(lookup).bind({})
    except (TypeError, ValueError):
        return None, None
    return inclusion, lookup


# FastAPI >= 0.1xx includes routers lazily (an inclusion matched route by route at each
# request); older versions copy an included router's routes and never ask the gates.
_Inclusion: Any
_included_router_of: Callable[[Scope], Any] | None
_Inclusion, _included_router_of = _lazy_internals()
_LAZY: Final = _Inclusion is not None and _included_router_of is not None
#: Whether FastAPI counts the changes of a router's routes (``_routes_version``, asked
#: with ``_get_routes_version``, bumped by ``_mark_routes_changed``).
_VERSIONED: Final = (
    callable(getattr(APIRouter, "_get_routes_version", None))
    and callable(getattr(APIRouter, "_mark_routes_changed", None))
    and type(getattr(APIRouter(), "_routes_version", None)) is int
)

__all__ = ["gated", "gated_routers"]

#: Where the outer gate of :func:`gated_routers` leaves, between matching a request and
#: handling it, the inclusion that matched (``scope`` key).
_CHOSEN_KEY: Final = "usermgmt.gate"

#: Route kinds whose path pattern starts with their ``path`` (a Host matches on the
#: host name: a router with one is not gated).
_PATH_ROUTES: Final = (Route, WebSocketRoute, Mount)


def _beginnings(paths: Iterable[str]) -> tuple[str, ...]:
    """The fewest strings such that a path starts with one of them exactly when it
    starts with one of ``paths`` (``/users`` covers ``/users/me``)."""
    kept: list[str] = []
    for path in sorted(set(paths)):
        if not kept or not path.startswith(kept[-1]):
            kept.append(path)
    return tuple(kept)


def _route_beginnings(router: APIRouter, prefix: str) -> tuple[str, ...] | None:
    """What every path one of ``router``'s routes matches starts with, once the router
    is included under ``prefix``: each route's path up to its first parameter. None
    when a route does not match on its path, or may match any (``/``, a parameter
    first): no gate then."""
    found: list[str] = []
    for route in router.routes:
        if not isinstance(route, _PATH_ROUTES):
            return None
        path: Any = getattr(route, "path", None)
        if not isinstance(path, str):
            return None
        beginning = prefix + path.split("{", 1)[0]
        if len(beginning) < 2:
            return None  # ``/`` or a parameter first: it may match any path
        found.append(beginning)
    return _beginnings(found)


def _first_segment(path: str) -> str:
    """``/users`` for ``/users/me`` and for ``/users``."""
    end = path.find("/", 1)
    return path if end < 0 else path[:end]


def _route_segments(router: APIRouter, prefix: str) -> frozenset[str] | None:
    """The first segment of every path ``router``'s routes match once included under
    ``prefix`` (``/auth``, ``/users``, ...); None when a route's first segment holds a
    parameter (or is ``/``): it could have any. Call after :func:`_route_beginnings`
    said the routes match on their paths."""
    segments: set[str] = set()
    for route in router.routes:
        path = prefix + str(getattr(route, "path", ""))
        literal = path.split("{", 1)[0]
        if literal.find("/", 1) > 0:
            segments.add(_first_segment(literal))
        elif literal == path and len(path) > 1 and not isinstance(route, Mount):
            segments.add(path)  # the whole path is one literal segment
        else:
            return None
    return frozenset(segments)


def _route_paths(scope: Scope) -> tuple[str, ...]:
    """The request's path as sent and, when it is under the root path, below it (the
    path routing sees: Starlette's rule). Both are tried: the gates stay on the safe
    side of any difference in how a FastAPI version strips the root path."""
    path: str = scope.get("path", "")
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        size = len(root_path)
        if path[size : size + 1] == "/":
            return path, path[size:]
    return (path,)


def _may_match(scope: Scope, beginnings: tuple[str, ...]) -> bool:
    """Whether one of the request's paths (:func:`_route_paths`) starts with one of
    ``beginnings``."""
    path: str = scope.get("path", "")
    if path.startswith(beginnings):
        return True
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        size = len(root_path)
        return path[size : size + 1] == "/" and path[size:].startswith(beginnings)
    return False


#: An inclusion inside an outer gate with the beginnings of its routes (None: no gate).
_Candidate = tuple[Any, tuple[str, ...] | None]


class _GatedRouter(APIRouter):
    """An APIRouter behind a check of the path's beginning; with ``_outer`` set, one
    holding gated routers (see :func:`gated_routers`)."""

    _beginnings: tuple[str, ...] | None = None  # None: no gate
    _segments: frozenset[str] | None = None  # the first segments, None: any
    #: The prefix of the inclusion the beginnings are for: an inclusion with another
    #: one (nested in a router with a prefix, included with another prefix) is not gated.
    _prefix: str = ""
    _outer: bool = False
    #: Whether the version of the routes below is this router's own: true while every
    #: router it includes is a gate that reports its changes (``_parents``).
    _exact: bool = _VERSIONED
    #: The gates that include this one (told of its changes).
    _parents: tuple[_GatedRouter, ...] = ()
    #: Set once the beginnings are computed: a change of the routes from then on (a
    #: route added, a router included) opens the gate for good (``_open``).
    _sealed: bool = False
    #: For a gate that is not exact, the version of the routes below when sealed.
    _sealed_version: int | None = None
    #: What an inclusion of the gate checks by itself (:func:`_gated_inclusion`), while
    #: the gate is sealed, exact and not open: (the prefix, the first segments, the
    #: beginnings).
    _fast: tuple[str, frozenset[str] | None, tuple[str, ...]] | None = None
    #: The inclusions inside, by the first segment of the paths they may match, for the
    #: list of inclusions FastAPI built last: (that list, {segment: candidates},
    #: candidates for any other segment, every candidate).
    _index: (
        tuple[
            list[Any],
            dict[str, tuple[_Candidate, ...]],
            tuple[_Candidate, ...],
            tuple[_Candidate, ...],
        ]
        | None
    ) = None

    # -- the version of the routes ---------------------------------------------------------
    # FastAPI asks an inclusion for the version of its routes at every match and walks
    # every router inside it for that (~20k instructions for nine routers). A gate's
    # version counts the changes of the gates inside, which report them.

    def include_router(self, router: APIRouter, *args: Any, **kwargs: Any) -> None:
        if isinstance(router, _GatedRouter):
            router._parents = (*router._parents, self)
        if not (isinstance(router, _GatedRouter) and router._exact):
            self._inexact()  # changes below it are not reported: FastAPI's walk
        super().include_router(router, *args, **kwargs)

    def _inexact(self) -> None:
        self._exact = False
        for parent in self._parents:
            parent._inexact()

    def _seal(self) -> None:
        if _VERSIONED and not self._exact:
            self._sealed_version = super()._get_routes_version()
        self._sealed = True
        if _VERSIONED and self._beginnings is not None and self._sealed_version is None:
            self._fast = (self._prefix, self._segments, self._beginnings)

    def _open(self) -> None:
        """No gate any more (its routes changed after the beginnings were computed),
        nor in the gates that include it."""
        self._beginnings = None
        self._segments = None
        self._fast = None
        for parent in self._parents:
            parent._open()

    def _mark_routes_changed(self, *args: Any, **kwargs: Any) -> None:
        if self._sealed:
            self._open()  # before the new version: no index is built on the old gate
        super()._mark_routes_changed(*args, **kwargs)
        for parent in self._parents:
            parent._mark_routes_changed()

    def _get_routes_version(self, *args: Any, **kwargs: Any) -> int:
        if self._exact:
            version: int = self._routes_version
            return version
        walked: int = super()._get_routes_version(*args, **kwargs)
        return walked

    # -- matching --------------------------------------------------------------------------

    def _gates(self, scope: Scope) -> bool:
        """Whether the gate applies to the inclusion being matched: one FastAPI names,
        of this router, with the prefix the beginnings were computed for, and no change
        below that the gates were not told of (without FastAPI's count of changes, a
        gate could not tell: it never applies)."""
        if _included_router_of is None or not _VERSIONED:
            return False
        included = _included_router_of(scope)
        if (
            included is None
            or getattr(included, "original_router", None) is not self
            or included.include_context.prefix != self._prefix
        ):
            return False
        if self._sealed_version is not None:
            if super()._get_routes_version() != self._sealed_version:
                self._open()  # a router inside changed: its routes may be anywhere now
                return False
        elif type(included) is _Inclusion and _GatedInclusion is not None:
            # from now on the inclusion itself asks the gate first (_gated_inclusion)
            included.__class__ = _GatedInclusion
        return True

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        beginnings = self._beginnings
        if beginnings is not None and not _may_match(scope, beginnings) and self._gates(scope):
            return _NO_MATCH, {}
        if self._outer:
            found = self._match_inner(scope)
            if found is not None:
                return found
        return super().matches(scope)

    def _candidates(
        self, candidates: list[Any], paths: tuple[str, ...]
    ) -> tuple[_Candidate, ...] | None:
        """The inclusions of ``candidates`` that may match one of ``paths``, in order;
        None when one is not an inclusion of a router."""
        index = self._index
        if index is None or index[0] is not candidates:
            listed: list[tuple[_Candidate, frozenset[str] | None]] = []
            for candidate in candidates:
                if not isinstance(candidate, _Inclusion):
                    return None
                router = candidate.original_router
                if (
                    isinstance(router, _GatedRouter)
                    and router._beginnings is not None
                    and candidate.include_context.prefix == router._prefix
                    and router._sealed_version is None
                ):
                    listed.append(((candidate, router._beginnings), router._segments))
                else:
                    listed.append(((candidate, None), None))
            keys = {key for _, segments in listed for key in segments or ()}
            by_segment = {
                key: tuple(c for c, segments in listed if segments is None or key in segments)
                for key in keys
            }
            anywhere = tuple(c for c, segments in listed if segments is None)
            index = self._index = (candidates, by_segment, anywhere, tuple(c for c, _ in listed))
        if len(paths) == 1:
            return index[1].get(_first_segment(paths[0]), index[2])
        return index[3]  # under a root path: each checks both paths

    def _match_inner(self, scope: Scope) -> tuple[Match, Scope] | None:
        """FastAPI's matching of the routers inside (the first full match, else the
        first partial one), trying only those whose gate lets the path through, and
        remembering which one matched fully for :meth:`handle`. None when FastAPI's inclusion
        is not what this expects (then FastAPI matches)."""
        if _included_router_of is None:
            return None
        included = _included_router_of(scope)
        if included is None or getattr(included, "original_router", None) is not self:
            return None
        paths = _route_paths(scope)
        candidates = self._candidates(included.effective_candidates(), paths)
        if candidates is None:
            return None
        partial = False
        for candidate, beginnings in candidates:
            if beginnings is not None:
                for path in paths:
                    if path.startswith(beginnings):
                        break
                else:
                    continue
            match, _ = candidate.matches(scope)
            if match is Match.FULL:
                scope[_CHOSEN_KEY] = (included, scope.get("path"), candidate)
                return Match.FULL, {}
            if match is Match.PARTIAL:
                partial = True
        if partial:
            # not remembered: a route after this one may still match fully (then the
            # choice would stay in its scope); a 405 is rare enough to match again
            return Match.PARTIAL, {}
        return Match.NONE, {}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        chosen = scope.pop(_CHOSEN_KEY, None) if self._outer else None
        if (
            chosen is not None
            and _included_router_of is not None
            and chosen[0] is _included_router_of(scope)
            and chosen[1] is scope.get("path")
        ):
            # what FastAPI would do after matching the routers inside once more
            await chosen[2].handle(scope, receive, send)
            return
        await super().handle(scope, receive, send)


_NO_MATCH: Final = Match.NONE  # (an enum member's look-up on its class is not free)


def _gated_inclusion() -> type | None:
    """A subclass of FastAPI's inclusion class (no state of its own) whose ``matches``
    answers "no match" at once for a path none of its gate's routes could match, before
    FastAPI records the inclusion in the scope and asks the gate: a path of the
    application costs one call instead of four. :meth:`_GatedRouter._gates` gives an
    inclusion of a gate this class once it has seen that the gate applies to it (the
    inclusion names the gate, with the prefix the gate was built for). The common case
    only (no root path, a gate whose changes are reported to it: ``_fast``); anything
    else goes to FastAPI's ``matches``, i.e. to :meth:`_GatedRouter.matches`, as before.
    The path's first segment is compared with those of the routes when they are known
    (a route's path pattern starts with its first segment whole: a path with another
    one matches none of them, full or partial), else its beginning with theirs. None
    when FastAPI has no lazy inclusions or does not count the changes of a router's
    routes.
    """
    if not (_LAZY and _VERSIONED):
        return None

    class GatedInclusion(_Inclusion):  # type: ignore[misc]
        __slots__ = ()

        def matches(self, scope: Scope) -> tuple[Match, Scope]:
            fast = self.original_router._fast
            if (
                fast is not None
                and self.include_context.prefix == fast[0]
                and not scope.get("root_path")
            ):
                path: str = scope.get("path", "")
                segments = fast[1]
                if segments is not None:
                    end = path.find("/", 1)
                    if (path if end < 0 else path[:end]) not in segments:
                        return _NO_MATCH, {}
                elif not path.startswith(fast[2]):
                    return _NO_MATCH, {}
            found: tuple[Match, Scope] = super().matches(scope)
            return found

    GatedInclusion.__qualname__ = GatedInclusion.__name__ = "_GatedInclusion"
    return GatedInclusion


_GatedInclusion: Final = _gated_inclusion()


_DEFAULTS: Final = APIRouter()
#: Settings of a router that its routes do not carry (FastAPI reads them from the
#: router at inclusion): the routes of a router that changes one are not moved.
_ROUTER_SETTINGS: Final = (
    "default_response_class",
    "generate_unique_id_function",
    "strict_content_type",
    "max_body_size",
    "form_limits",
    "on_startup",
    "on_shutdown",
    "_low_priority_routes",
    "dependency_overrides_provider",
)


def _movable(router: APIRouter) -> bool:
    """Whether ``router``'s routes can be held by another router with nothing lost:
    APIRoutes declared on it (``@router.get`` ...: its prefix, tags, responses and
    dependencies are the routes' own) and none of the router's settings changed."""
    return (
        all(type(route) is APIRoute for route in router.routes)
        and type(router.lifespan_context).__name__ == "_DefaultLifespan"
        and all(
            getattr(router, name, None) == getattr(_DEFAULTS, name, None)
            for name in _ROUTER_SETTINGS
        )
    )


def gated(router: APIRouter, prefix: str = "") -> APIRouter:
    """A router with ``router``'s routes that rejects at once the paths none of them
    could match once included under ``prefix`` (the prefix the result will be included
    with). A router with a route that does not match on its path is returned as is.

    When ``router``'s routes can be moved (see :func:`_movable`), the gate holds them
    itself; otherwise it includes ``router``. (Each level of inclusion costs FastAPI a
    match per request.) Moved routes are those of the moment: declare routes on
    ``router`` before gating it, or add later ones to the result (which serves them)."""
    beginnings = _route_beginnings(router, prefix)
    if beginnings is None:
        return router
    gate = _GatedRouter()
    if _movable(router):
        gate.routes.extend(router.routes)
    else:
        gate.include_router(router)
    gate._beginnings = beginnings
    gate._segments = _route_segments(router, prefix)
    gate._prefix = prefix
    gate._seal()
    return gate


def gated_routers(routers: Iterable[APIRouter], prefix: str = "") -> APIRouter:
    """One router holding each of ``routers``, gated (:func:`gated`), in order, behind
    one gate of all their routes' beginnings: a path none of them could match costs one
    check instead of one per router. Include the result with ``prefix``. Each router's
    routes, tags, responses and dependencies stay its own, as when it is included on
    its own."""
    outer = _GatedRouter()
    found: list[str] | None = []
    segments: set[str] | None = set()
    for router in routers:
        gate = gated(router, prefix)
        outer.include_router(gate)
        if not isinstance(gate, _GatedRouter) or gate._beginnings is None:
            found = None  # it may take any path: no outer gate
            continue
        if found is not None:
            found.extend(gate._beginnings)
        if segments is not None:
            segments = None if gate._segments is None else segments | gate._segments
    if found is not None:
        outer._beginnings = _beginnings(found)
        outer._segments = None if segments is None else frozenset(segments)
    outer._prefix = prefix
    outer._outer = _LAZY
    outer._seal()
    return outer
