"""FastAPI only: ``mount()`` puts usermgmt's routers behind one gate of all their paths'
beginnings (``usermgmt_fastapi.routing.gated_routers``), each router gated inside it, so
an application route declared after ``mount()`` costs one check. Routing decisions are
those of the same routers included one by one without any gate: every route reached,
405 on a partial match, redirects, 404, the prefix, the root path, ``url_path_for`` and
the OpenAPI document (byte for byte).

Requests are sent straight to the ASGI application, which records the route it chose
in the scope (``scope["route"]``). Also: ``GET /users/me``, which writes its body itself,
answers what FastAPI writes for its response model."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.http.conftest import DEMO_PERMISSION
from usermgmt.app import UserManagement
from usermgmt.clock import FakeClock
from usermgmt.config import Settings

fastapi = pytest.importorskip("fastapi")

import usermgmt_fastapi  # noqa: E402 - after the check that FastAPI is installed
from usermgmt_fastapi import routing  # noqa: E402

PREFIXES = ["", "/api"]
#: Paths next to usermgmt's ones (relative to the prefix): odd spellings, trailing
#: slashes, beginnings of real paths, nothing at all.
ODD_PATHS = [
    "/",
    "/nothing/here",
    "/auth",
    "/auth/",
    "/auth/login/",
    "/authx/login",
    "/users",
    "/users/",
    "/users/me/",
    "/users//me",
    "//users/me",
    "/usersme",
    "/users/me/oauth-accounts/",
    "/organizations",
    "/organizations/",
    "/organizations/x/",
    "/organizations/x/members/y/z",
    "/health/",
    "/healthy",
    "/metrics/",
    "/permissions/x",
    "/audit-logs/",
    "/invitations",
]


def _um() -> UserManagement:
    um = UserManagement.in_memory(
        Settings.for_tests(rate_limit_max_requests=100_000), clock=FakeClock()
    )
    um.register_permission(DEMO_PERMISSION, "Demo permission of the test app")
    return um


def _app_routes(app: Any) -> None:
    """The application's own routes, declared after usermgmt's."""
    from fastapi import Depends

    @app.get("/hello")
    def hello() -> dict[str, str]:
        return {"hello": "world"}

    @app.get(
        "/orgs/{org_id}/projects",
        dependencies=[Depends(usermgmt_fastapi.require_permission(DEMO_PERMISSION))],
    )
    def projects(org_id: str) -> dict[str, str]:
        return {"org_id": org_id}

    @app.post("/health")  # usermgmt has GET /health only: a partial match first
    def post_health() -> dict[str, str]:
        return {"app": "post health"}

    @app.get("/healthy")  # begins like /health
    def healthy() -> dict[str, str]:
        return {"app": "healthy"}

    @app.get("/users/{user_id}/avatar")  # below a usermgmt path, matched by none of them
    def avatar(user_id: str) -> dict[str, str]:
        return {"app": user_id}


def _gated_app(prefix: str = "", *, metrics: bool = True) -> Any:
    app = fastapi.FastAPI()
    usermgmt_fastapi.mount(app, _um(), prefix, metrics=metrics)
    _app_routes(app)
    return app


def _plain_app(prefix: str = "", *, metrics: bool = True) -> Any:
    """The reference: the same routers included one by one, with no gate."""
    app = fastapi.FastAPI()
    usermgmt_fastapi.install(
        app, _um(), rate_limit_exempt=(f"{prefix}/health", f"{prefix}/metrics"), metrics=metrics
    )
    for router in usermgmt_fastapi.all_routers(metrics=metrics):
        app.include_router(router, prefix=prefix)
    _app_routes(app)
    return app


Answer = tuple[int, list[tuple[str, str]], Any, tuple[str, str, tuple[str, ...]] | None]


def _exchange(
    app: Any, method: str, path: str, *, root_path: str = "", token: str | None = None
) -> tuple[int, list[tuple[str, str]], bytes, dict[str, Any]]:
    """One request straight to the ASGI application: (status, headers but those that
    differ from one request to the next (request id, rate-limit count), body, scope)."""
    headers = [(b"host", b"testserver")]
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": root_path,
        "headers": headers,
        "client": ("127.0.0.1", 5555),
        "server": ("testserver", 80),
    }
    started: dict[str, Any] = {}
    body = bytearray()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            started.update(message)
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    asyncio.run(app(scope, receive, send))
    kept = [
        (key.decode(), value.decode())
        for key, value in started["headers"]
        if key not in (b"x-request-id", b"ratelimit-remaining")
    ]
    return started["status"], kept, bytes(body), scope


def _call(app: Any, method: str, path: str, *, root_path: str = "") -> Answer:
    """(status, headers, body, the route chosen as (name, path, methods)) of one request
    (the route recorded in the scope)."""
    status, headers, raw, scope = _exchange(app, method, path, root_path=root_path)
    content: Any = raw
    if dict(headers).get("content-type", "").startswith("text/plain; version="):
        # Prometheus metrics: their counts change with every request
        headers = [(key, value) for key, value in headers if key != "content-length"]
        content = None
    elif raw.startswith(b"{"):
        content = json.loads(raw)
        content.pop("request_id", None)
    route = scope.get("route")
    chosen = None
    if route is not None:
        chosen = (route.name, route.path, tuple(sorted(route.methods or ())))
    return status, headers, content, chosen


def _filled(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def _usermgmt_routes(metrics: bool = True) -> Iterator[tuple[str, str, str]]:
    """(method, path, route name) of every usermgmt route, in inclusion order."""
    for router in usermgmt_fastapi.all_routers(metrics=metrics):
        for route in router.routes:
            for method in sorted(route.methods):
                yield method, route.path, route.name


@pytest.fixture(scope="module")
def apps() -> dict[str, tuple[Any, Any]]:
    """{prefix: (gated app, plain app)}."""
    return {prefix: (_gated_app(prefix), _plain_app(prefix)) for prefix in PREFIXES}


# --- the same answers as the routers included one by one --------------------------------------


@pytest.mark.parametrize("prefix", PREFIXES)
def test_every_usermgmt_route_is_reached_as_without_the_gates(apps, prefix):
    gated, plain = apps[prefix]
    seen = 0
    for method, path, name in _usermgmt_routes():
        url = prefix + _filled(path)
        answer = _call(gated, method, url)
        assert answer == _call(plain, method, url), f"{method} {url}"
        chosen = answer[3]
        assert chosen is not None
        assert chosen[:2] == (name, path), f"{method} {url}: {chosen}"
        assert answer[0] != 405, f"{method} {url}"
        if answer[0] == 404:  # the route's own answer (an unknown provider), not routing's
            assert answer[2]["detail"] != "Not Found", f"{method} {url}"
        seen += 1
    assert seen == 56  # every route of every router


@pytest.mark.parametrize("prefix", PREFIXES)
def test_an_unknown_method_on_a_usermgmt_path_is_a_405_as_without_the_gates(apps, prefix):
    gated, plain = apps[prefix]
    paths = sorted({path for _, path, _ in _usermgmt_routes()})
    for path in paths:
        url = prefix + _filled(path)
        answer = _call(gated, "PUT", url)
        assert answer == _call(plain, "PUT", url), url
        assert answer[0] == 405, url
        assert "allow" in dict(answer[1]), url


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_paths_next_to_usermgmt_ones_are_answered_as_without_the_gates(apps, prefix, method):
    gated, plain = apps[prefix]
    statuses = set()
    for path in [*ODD_PATHS, *(prefix + path for path in ODD_PATHS)]:
        answer = _call(gated, method, path)
        assert answer == _call(plain, method, path), f"{method} {path}"
        statuses.add(answer[0])
    assert {404, 307} <= statuses  # not found and redirected, among others


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("root_path", ["/root", "/root/deeper", "/users"])
def test_under_a_root_path_routing_is_as_without_the_gates(apps, prefix, root_path):
    gated, plain = apps[prefix]
    paths = [prefix + _filled(path) for _, path, _ in _usermgmt_routes()][::3]
    paths += [prefix + path for path in ODD_PATHS[:8]] + ["/hello", "/health"]
    reached = 0
    for path in paths:
        for sent in (root_path + path, path):  # under the root path, and not
            answer = _call(gated, "GET", sent, root_path=root_path)
            assert answer == _call(plain, "GET", sent, root_path=root_path), sent
            reached += answer[3] is not None
    assert reached > len(paths)


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("metrics", [True, False])
def test_the_openapi_document_is_byte_identical(prefix, metrics):
    gated = json.dumps(_gated_app(prefix, metrics=metrics).openapi())
    plain = json.dumps(_plain_app(prefix, metrics=metrics).openapi())
    assert gated == plain
    assert f'"{prefix}/users/me"' in gated


@pytest.mark.parametrize("prefix", PREFIXES)
def test_url_path_for_finds_every_usermgmt_route_by_name(apps, prefix):
    gated, plain = apps[prefix]
    for _, path, name in _usermgmt_routes():
        params = dict.fromkeys(re.findall(r"\{([^}:]+)", path), "x")
        url = gated.url_path_for(name, **params)
        assert url == plain.url_path_for(name, **params)
        named = {prefix + _filled(other) for _, other, same in _usermgmt_routes() if same == name}
        assert str(url) in named


# --- the application's own routes --------------------------------------------------------------


@pytest.mark.parametrize("prefix", PREFIXES)
def test_routes_declared_after_mount_reach_the_application(apps, prefix):
    gated, plain = apps[prefix]
    cases = [
        ("GET", "/hello", 200, "hello"),
        ("GET", "/orgs/o1/projects", 401, "projects"),  # its guard answers, not a 404
        ("GET", "/healthy", 200, "healthy"),
        ("GET", "/users/u1/avatar", 200, "avatar"),
        # a full match after usermgmt's partial one (GET /health) when not prefixed
        ("POST", "/health", 200, "post_health"),
        ("GET", prefix + "/health", 200, "health"),
    ]
    for method, path, status, name in cases:
        answer = _call(gated, method, path)
        assert answer == _call(plain, method, path), f"{method} {path}"
        assert answer[0] == status, f"{method} {path}: {answer}"
        assert answer[3] is not None
        assert answer[3][0] == name, f"{method} {path}"


def test_the_router_dependencies_still_run(apps):
    gated, _ = apps[""]
    status, headers, _, chosen = _call(gated, "GET", "/auth/oauth/providers")
    assert status == 200
    assert ("cache-control", "no-store") in headers
    assert chosen is not None
    assert chosen[0] == "list_providers"


# --- the gates on their own ----------------------------------------------------------------------


def _router(path: str = "/things/{thing_id}", *, name: str = "thing") -> Any:
    router = fastapi.APIRouter()

    @router.get(path, name=name)
    def thing() -> dict[str, str]:
        return {"router": name}

    return router


def _serve(*routes: Any) -> Callable[[str, str], Answer]:
    app = fastapi.FastAPI()
    for route in routes:
        app.include_router(route)

    @app.get("/{anything}")
    def anything() -> dict[str, str]:
        return {"app": "anything"}

    return lambda method, path: _call(app, method, path)


def test_a_router_that_can_match_any_path_is_not_gated_and_stays_reachable():
    catch_all = _router("/{slug}/page", name="page")
    assert routing.gated(catch_all) is catch_all
    call = _serve(routing.gated_routers([_router(), catch_all]))
    assert call("GET", "/things/1")[3][0] == "thing"
    assert call("GET", "/about/page")[3][0] == "page"
    assert call("GET", "/about")[3][0] == "anything"
    assert call("DELETE", "/about/page")[0] == 405


def test_a_single_router_can_be_gated_or_included_plainly():
    for router in (routing.gated(usermgmt_fastapi.users_router()), usermgmt_fastapi.users_router()):
        app = fastapi.FastAPI()
        usermgmt_fastapi.install(app, _um())
        app.include_router(router)
        assert _call(app, "GET", "/users/me")[:1] == (401,)
        assert _call(app, "GET", "/users/me")[3][0] == "get_me"
        assert _call(app, "GET", "/auth/login")[0] == 404
        assert app.url_path_for("get_me") == "/users/me"


def test_a_router_with_its_own_settings_is_included_not_emptied():
    started: list[str] = []
    router = fastapi.APIRouter(on_startup=[lambda: started.append("started")])

    @router.get("/things/{thing_id}")
    def thing() -> dict[str, str]:
        return {"router": "thing"}

    gate = routing.gated(router)
    assert gate is not router
    assert gate.routes[0].original_router is router
    app = fastapi.FastAPI()
    app.include_router(routing.gated_routers([router]))
    from fastapi.testclient import TestClient

    with TestClient(app) as client:
        assert client.get("/things/1").json() == {"router": "thing"}
    # kept (run once per level of inclusion: FastAPI's own way with nested routers)
    assert started
    assert set(started) == {"started"}


def test_a_route_added_to_a_gated_router_after_a_request_is_served():
    outer = routing.gated_routers([_router()])
    call = _serve(outer)
    assert call("DELETE", "/things/1")[0] == 405
    inner = outer.routes[0].original_router  # the gate holding the router's routes
    inner.add_api_route("/things/{thing_id}", lambda: {"deleted": True}, methods=["DELETE"])
    answer = call("DELETE", "/things/1")
    assert answer[0] == 200
    assert answer[2] == {"deleted": True}


def test_two_gated_groups_in_one_application_each_answer_for_their_paths():
    """A partial match in the first group and a full one in the second: the second one
    handles the request (the first group's remembered choice is not used)."""
    first = routing.gated_routers([_router("/things/{thing_id}", name="first")])
    second_router = fastapi.APIRouter()

    @second_router.post("/things/{thing_id}", name="second")
    def second() -> dict[str, str]:
        return {"router": "second"}

    call = _serve(first, routing.gated_routers([second_router]))
    assert call("GET", "/things/1")[2] == {"router": "first"}
    assert call("POST", "/things/1")[2] == {"router": "second"}
    # partial matches in both: the first one answers, as FastAPI's own choice
    status, headers, _, _ = call("PUT", "/things/1")
    assert status == 405
    assert dict(headers)["allow"] == "GET"


# --- GET /users/me writes its body itself ------------------------------------------------------


def test_get_me_answers_what_fastapi_writes_for_its_response_model():
    """``GET /users/me`` serializes its ``UserOut`` itself (no ``no_store`` dependency, no
    validation of the model it just built): the same bytes and headers as FastAPI's own
    serialization of ``response_model=UserOut``."""
    from usermgmt.schemas import UserOut

    um = _um()
    app = fastapi.FastAPI()
    usermgmt_fastapi.mount(app, um)

    @app.get("/reference/me", response_model=UserOut)
    async def reference(user: usermgmt_fastapi.CurrentUser, response: fastapi.Response) -> UserOut:
        response.headers["Cache-Control"] = "no-store"
        return UserOut.of(user)

    password = "a long passphrase, for the routing tests 7"
    user = um.users.register(email="zoe@example.com", password=password, name="Zoë «Z»").user
    assert user is not None
    um.users.update_profile(user.id, {"metadata": {"team": ["ä", 1, 2.5, None, True]}})
    token = um.auth.login(email="zoe@example.com", password=password).access_token

    def get(path: str) -> tuple[int, list[tuple[str, str]], bytes]:
        status, headers, body, _ = _exchange(app, "GET", path, token=token)
        return status, sorted(headers), body  # (FastAPI adds Cache-Control last)

    mine, reference_answer = get("/users/me"), get("/reference/me")
    assert mine == reference_answer
    assert mine[0] == 200
    assert ("cache-control", "no-store") in mine[1]
    assert json.loads(mine[2])["metadata"] == {"team": ["ä", 1, 2.5, None, True]}


# --- review R2: the gates follow the inclusion they are asked for ------------------------------


def _thing_app(include: Callable[[Any], None]) -> Callable[[str, str], Answer]:
    app = fastapi.FastAPI()
    include(app)
    return lambda method, path: _call(app, method, path)


def test_a_gate_included_under_another_prefix_than_it_was_built_for_still_routes():
    """The gates compare the path with the prefix of the inclusion FastAPI asks them
    for, not only with the ``prefix`` argument: nested in a router with a prefix, or
    included with another prefix, they route as the plain router would (no 404)."""

    def nested(app: Any) -> None:
        api = fastapi.APIRouter(prefix="/v2")
        api.include_router(routing.gated_routers([_router()]))
        app.include_router(api)

    def nested_with_prefix(app: Any) -> None:
        api = fastapi.APIRouter()
        api.include_router(routing.gated_routers([_router()], "/v3"), prefix="/v3/x")
        app.include_router(api)

    cases = [
        (nested, "/v2/things/1"),
        (nested_with_prefix, "/v3/x/things/1"),
        (lambda app: app.include_router(routing.gated(_router()), prefix="/v4"), "/v4/things/1"),
        (
            lambda app: app.include_router(routing.gated_routers([_router()], "/a"), prefix="/b"),
            "/b/things/1",
        ),
    ]
    for include, path in cases:
        answer = _thing_app(include)("GET", path)
        assert answer[0] == 200, path
        assert answer[2] == {"router": "thing"}, path


def test_routes_added_to_the_gates_after_mount_anywhere_are_served():
    """A route added after the gates were built, at a path none of their routes had,
    is served as by a plain inclusion (the gates' paths are not a stale snapshot)."""
    for prefix in PREFIXES:
        app = _gated_app(prefix)
        (outer_inclusion,) = [
            route for route in app.router.routes if hasattr(route, "original_router")
        ]
        outer = outer_inclusion.original_router
        inner = outer.routes[2].original_router  # /users
        assert _call(app, "GET", f"{prefix}/late")[0] == 404  # asked once before
        outer.add_api_route("/late", lambda: {"late": "outer"}, methods=["GET"])
        inner.add_api_route("/elsewhere/{x}", lambda: {"late": "inner"}, methods=["GET"])
        assert _call(app, "GET", f"{prefix}/late")[2] == {"late": "outer"}, prefix
        assert _call(app, "GET", f"{prefix}/elsewhere/1")[2] == {"late": "inner"}, prefix
        assert _call(app, "GET", f"{prefix}/users/me")[0] == 401
        assert _call(app, "GET", "/hello")[2] == {"hello": "world"}


def test_a_route_added_to_a_router_a_gate_includes_is_served():
    """A router the gate includes (its settings are its own) gets a route later at a
    new path: served, as when the router is included plainly."""
    router = fastapi.APIRouter(on_startup=[lambda: None])
    router.add_api_route("/things/{thing_id}", lambda: {"router": "thing"}, methods=["GET"])
    call = _serve(routing.gated_routers([router]))
    assert call("GET", "/things/1")[2] == {"router": "thing"}
    router.add_api_route("/other/{x}", lambda: {"router": "other"}, methods=["GET"])
    assert call("GET", "/other/1")[2] == {"router": "other"}


@pytest.mark.parametrize(
    "change",
    ["lookup takes another argument", "lookup renamed", "inclusion without candidates"],
)
def test_fastapi_internals_of_another_shape_are_not_used(monkeypatch, change):
    """FastAPI's private names missing, or present with another shape: the gates do not
    use them and routing is FastAPI's own. (The gates' module is reloaded against a copy
    of ``fastapi.routing`` so changed; FastAPI itself keeps its real module.)"""
    import importlib
    import sys
    import types

    import fastapi.routing as real

    changed = types.ModuleType("fastapi.routing")
    changed.__dict__.update(real.__dict__)
    if change == "lookup takes another argument":

        def reshaped(scope: Any, router: Any) -> Any:
            raise AssertionError("called with the old signature")

        changed._get_scope_included_router = reshaped  # type: ignore[attr-defined]
    elif change == "lookup renamed":
        del changed._get_scope_included_router
    else:

        class Inclusion:  # another shape: no effective_candidates
            original_router: Any = None

        changed._IncludedRouter = Inclusion  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fastapi.routing", changed)
    monkeypatch.setattr(fastapi, "routing", changed)
    try:
        reloaded = importlib.reload(routing)
        app = fastapi.FastAPI()
        usermgmt_fastapi.install(app, _um())
        outer = reloaded.gated_routers(usermgmt_fastapi.all_routers(), "/api")
        app.include_router(outer, prefix="/api")
        _app_routes(app)
        assert _call(app, "GET", "/api/users/me")[3][0] == "get_me"
        assert _call(app, "GET", "/api/health")[0] == 200
        assert _call(app, "PUT", "/api/health")[0] == 405
        assert _call(app, "GET", "/api/nothing")[0] == 404
        assert _call(app, "GET", "/hello")[2] == {"hello": "world"}
        assert not reloaded._LAZY
    finally:
        monkeypatch.undo()
        importlib.reload(routing)
    assert routing._LAZY


def test_a_partial_match_of_the_gates_leaves_nothing_in_the_scope_of_another_route():
    """usermgmt's GET /health half matches POST /health, which the application's route
    serves: the scope that route sees holds nothing of the gates' matching."""
    seen: dict[str, Any] = {}
    app = fastapi.FastAPI()
    usermgmt_fastapi.mount(app, _um())

    @app.post("/health")
    def post_health(request: fastapi.Request) -> dict[str, str]:
        seen.update(request.scope)
        return {"app": "post health"}

    status, _, body, scope = _exchange(app, "POST", "/health")
    assert (status, json.loads(body)) == (200, {"app": "post health"})
    assert seen["route"].name == "post_health"
    assert not [key for key in scope if key.startswith("usermgmt")]
    # the partial match is still answered by usermgmt's route when nothing else matches
    assert _call(app, "PUT", "/health")[0] == 405


def test_within_one_gate_a_full_match_after_a_partial_one_wins():
    """Two routers behind one gate, the first only half matching (another method): the
    second one, which matches fully, serves the request, as FastAPI would choose."""
    second_router = fastapi.APIRouter()

    @second_router.post("/things/{thing_id}", name="second")
    def second() -> dict[str, str]:
        return {"router": "second"}

    app = fastapi.FastAPI()
    app.include_router(routing.gated_routers([_router(name="first"), second_router]))

    @app.post("/things/{thing_id}")  # after the gate: the gate's full match comes first
    def of_the_app() -> dict[str, str]:
        return {"router": "app"}

    assert _call(app, "GET", "/things/1")[2] == {"router": "first"}
    assert _call(app, "POST", "/things/1")[2] == {"router": "second"}
    status, headers, _, _ = _call(app, "PUT", "/things/1")
    assert (status, dict(headers)["allow"]) == (405, "GET")


def test_one_gated_group_in_two_applications_under_different_prefixes():
    shared = routing.gated_routers([_router()], "/a")
    calls = {
        prefix: _thing_app(lambda app, p=prefix: app.include_router(shared, prefix=p))
        for prefix in ("/a", "/b")
    }
    for _ in range(2):  # alternately: nothing remembered from the other application
        for prefix, call in calls.items():
            assert call("GET", f"{prefix}/things/1")[2] == {"router": "thing"}, prefix
            assert call("PUT", f"{prefix}/things/1")[0] == 405, prefix
            assert call("GET", f"{prefix}/nothing")[0] == 404, prefix


def test_the_inclusion_of_mounts_gate_answers_an_application_path_itself():
    """Once the gate has said "no" for a path of the application, FastAPI's inclusion of
    it answers such paths by itself (no call into FastAPI's matching); routing is
    unchanged, usermgmt's paths still go through the gates, and a route added to the
    gate afterwards (it opens) is served."""
    for prefix in PREFIXES:
        app = _gated_app(prefix)
        (inclusion,) = [route for route in app.router.routes if hasattr(route, "original_router")]
        assert _call(app, "GET", "/hello")[2] == {"hello": "world"}
        assert type(inclusion) is routing._GatedInclusion
        outer = inclusion.original_router
        assert outer._fast == (prefix, outer._segments, outer._beginnings)
        assert outer._segments is not None
        plain = _plain_app(prefix)
        requests = [
            ("GET", "/hello", ""),
            ("GET", "/healthy", ""),  # begins like /health
            ("GET", "/users/x/avatar", ""),  # below a usermgmt path
            ("GET", f"{prefix}/users/me", ""),
            ("PUT", f"{prefix}/users/me", ""),
            ("GET", f"{prefix}/nothing", ""),
            ("GET", "", ""),
            ("GET", "/root/hello", "/root"),
            ("GET", f"/root{prefix}/users/me", "/root"),
        ]
        for _ in range(2):
            for method, path, root_path in requests:
                answer = _call(app, method, path, root_path=root_path)
                assert answer == _call(plain, method, path, root_path=root_path), path
        assert _call(app, "GET", "/healthy")[2] == {"app": "healthy"}
        assert type(inclusion) is routing._GatedInclusion
        outer.add_api_route("/hello", lambda: {"hello": "gate"}, methods=["GET"])
        assert outer._fast is None
        expected = {"hello": "gate"} if prefix == "" else {"hello": "world"}
        assert _call(app, "GET", "/hello")[2] == expected, prefix
        assert _call(app, "GET", f"{prefix}/hello")[2] == {"hello": "gate"}, prefix
