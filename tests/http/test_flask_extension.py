"""What only the Flask adapter has: the extension object (``UserMgmt(app, um)`` and the
``init_app`` factory pattern, ``app.extensions["usermgmt"]``), one extension serving
several apps, the decorators on the application's own views, and the Werkzeug defaults
it overrides so that it serves the same contract as the FastAPI adapter (checked here
route by route and response by response against that adapter).

The framework comes from the ``flask_kit`` fixture; every other HTTP test runs on
Flask through the ``api`` fixture.
"""

from __future__ import annotations

import json
import re
from typing import Any
from uuid import UUID

import pytest

from tests.http.conftest import BOOM_PATH, BUILDERS, DEMO_PATH, DEMO_PERMISSION, Api
from usermgmt.errors import ConfigurationError, ValidationError

PASSWORD = "correct horse battery staple"


# --- the extension -------------------------------------------------------------------------


def test_init_app_registers_the_extension_state(flask_kit):
    um = flask_kit.um()
    ext = flask_kit.ext.UserMgmt()
    app = flask_kit.app()

    ext.init_app(app, um)

    state = app.extensions["usermgmt"]
    assert isinstance(state, flask_kit.ext.UserMgmtState)
    assert state.um is um
    assert flask_kit.ext.UserMgmt.state(app) is state
    with app.app_context():
        assert flask_kit.ext.get_um() is um
    api = flask_kit.api(app, um)
    assert api.get("/health").status_code == 200
    assert api.get("/users/me").status_code == 401


def test_the_constructor_sets_up_the_app_at_once(flask_kit):
    um = flask_kit.um()
    app = flask_kit.app()

    ext = flask_kit.ext.UserMgmt(app, um)

    assert app.extensions["usermgmt"].um is um
    assert ext.um is um
    account = flask_kit.api(app, um).account()
    assert flask_kit.api(app, um).get("/users/me", token=account.token).status_code == 200


def test_setup_errors(flask_kit):
    um = flask_kit.um()
    app = flask_kit.app()

    with pytest.raises(ConfigurationError):
        flask_kit.ext.UserMgmt().init_app(app)  # no UserManagement anywhere
    flask_kit.ext.UserMgmt(app, um)
    with pytest.raises(ConfigurationError):
        flask_kit.ext.UserMgmt(app, um)  # twice on one app
    with pytest.raises(ConfigurationError):
        flask_kit.ext.UserMgmt.state(flask_kit.app())
    with flask_kit.app().app_context(), pytest.raises(ConfigurationError):
        flask_kit.ext.get_um()


def test_one_extension_two_apps_two_user_managements_share_nothing(flask_kit):
    first_um, second_um = flask_kit.um(rate_limit_max_requests=2), flask_kit.um()
    ext = flask_kit.ext.UserMgmt()
    first_app, second_app = flask_kit.app(), flask_kit.app()
    ext.init_app(first_app, first_um)
    ext.init_app(second_app, second_um)
    first, second = flask_kit.api(first_app, first_um), flask_kit.api(second_app, second_um)
    account = first.account(email="ada@example.com")
    credentials = {"email": account.email, "password": account.password}

    assert first.get("/users/me", token=account.token).status_code == 200
    assert second.get("/users/me", token=account.token).status_code == 401
    assert second.post("/auth/login", json=credentials).status_code == 401
    assert first.post("/auth/login", json=credentials).status_code == 200
    # the first app's global rate limit is used up; the second's is its own
    assert first.post("/auth/login", json=credentials).status_code == 429
    assert second.get("/users/me").headers["ratelimit-limit"] == "100000"
    assert first_app.extensions["usermgmt"].um is first_um
    assert second_app.extensions["usermgmt"].um is second_um


def test_url_prefix(flask_kit):
    um = flask_kit.um(rate_limit_max_requests=1)
    app = flask_kit.app()
    flask_kit.ext.UserMgmt(app, um, url_prefix="/api/")
    api = flask_kit.api(app, um)

    assert [api.get("/api/health/live").status_code for _ in range(3)] == [200] * 3
    assert api.get("/api/users/me").status_code == 401
    assert api.get("/api/users/me").status_code == 429  # the health routes did not count
    assert app.extensions["usermgmt"].url_prefix == "/api"


def test_health_is_not_rate_limited_without_a_prefix_either(flask_kit):
    um = flask_kit.um(rate_limit_max_requests=1)
    app = flask_kit.app()
    flask_kit.ext.UserMgmt(app, um)
    api = flask_kit.api(app, um)

    assert [api.get("/health").status_code for _ in range(3)] == [200] * 3
    assert api.get("/api/health/live").status_code == 404  # counted: not under /health
    assert api.get("/users/me").status_code == 429


def test_max_body_bytes(flask_kit):
    um = flask_kit.um()
    app = flask_kit.app()
    flask_kit.ext.UserMgmt(app, um, max_body_bytes=100)
    api = flask_kit.api(app, um)
    body = {"email": "a@example.com", "password": "x" * 100}

    sized = api.post("/auth/login", json=body)
    streamed = api.post(
        "/auth/login",
        content=iter([json.dumps(body).encode()]),
        headers={"Content-Type": "application/json"},
    )

    for response in (sized, streamed):
        assert response.status_code == 413
        assert response.json()["detail"] == "The request body is larger than 100 bytes."


# --- the decorators on the application's own views -------------------------------------------


@pytest.fixture
def guarded(flask_kit):
    """An app with its own views behind ``login_required`` and ``permission_required``."""
    ext = flask_kit.ext
    um = flask_kit.um()
    app = flask_kit.app()
    ext.UserMgmt(app, um)

    @app.get("/me/dashboard")
    @ext.login_required
    def dashboard() -> dict[str, Any]:
        return {"email": ext.current_user().email}

    @app.get("/orgs/<org_id>/projects")
    @ext.permission_required(DEMO_PERMISSION)
    def projects(org_id: str) -> dict[str, Any]:
        permissions = ext.current_permissions()
        return {
            "organization_id": org_id,
            "roles": sorted(permissions.roles),
            "caller": permissions.user.email,  # an Access: the caller comes with it
        }

    @app.get("/teams/<team>/settings")
    @ext.permission_required("organization:update", org_id_arg="team")
    def team_settings(team: str) -> dict[str, Any]:
        return {"team": team}

    @app.get("/misconfigured")
    @ext.permission_required(DEMO_PERMISSION)
    def misconfigured() -> dict[str, Any]:
        return {}

    api = flask_kit.api(app, um)
    owner, member, outsider = api.account(), api.account(), api.account()
    org = api.org(owner)
    api.add_member(org, owner, member)
    return api, app, org, owner, member, outsider


def test_login_required(guarded):
    api, _, _, owner, _, _ = guarded

    allowed = api.get("/me/dashboard", token=owner.token)
    missing = api.get("/me/dashboard")
    garbage = api.get("/me/dashboard", token="not-a-jwt")

    assert allowed.status_code == 200
    assert allowed.json() == {"email": owner.email}
    assert missing.status_code == garbage.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert garbage.json()["code"] == "invalid_token"


def test_permission_required(guarded):
    api, _, org, owner, member, outsider = guarded
    path = f"/orgs/{org}/projects"

    allowed = api.get(path, token=owner.token)
    denied = api.get(path, token=member.token)

    assert allowed.status_code == 200
    assert allowed.json() == {"organization_id": org, "roles": ["owner"], "caller": owner.email}
    assert denied.status_code == 403
    assert denied.json()["permission"] == DEMO_PERMISSION
    assert api.get(path, token=outsider.token).status_code == 404
    assert api.get("/orgs/junk/projects", token=owner.token).status_code == 404
    assert api.get(path).status_code == 401
    events = api.um.audit.list(owner.user.id, UUID(org), action="authorization.denied")
    assert [e.actor_user_id for e in events.items] == [member.user.id]  # audited


def test_permission_required_with_another_path_parameter(guarded):
    api, _, org, owner, member, _ = guarded

    assert api.get(f"/teams/{org}/settings", token=owner.token).json() == {"team": org}
    assert api.get(f"/teams/{org}/settings", token=member.token).status_code == 403


def test_permission_required_without_the_path_parameter_is_a_500(guarded):
    api, _, _, owner, _, _ = guarded

    response = api.get("/misconfigured", token=owner.token)

    assert response.status_code == 500
    assert response.json()["code"] == "configuration_error"


def test_decorators_keep_the_view_and_mark_the_permission(guarded, flask_kit):
    _, app, _, _, _, _ = guarded

    view = app.view_functions["projects"]

    assert view.__name__ == "projects"
    assert view.usermgmt_permission == DEMO_PERMISSION
    with pytest.raises(ValidationError):
        flask_kit.ext.permission_required("not a permission")


def test_the_apps_own_routes_get_the_request_id_and_security_headers(guarded):
    api, _, _, owner, _, _ = guarded

    response = api.get("/me/dashboard", token=owner.token, headers={"X-Request-ID": "mine-1"})

    assert response.headers["x-request-id"] == "mine-1"  # check_invariants did the rest


def test_unexpected_exceptions_propagate_in_testing_mode(flask_kit):
    um = flask_kit.um()
    app = flask_kit.app()
    flask_kit.ext.UserMgmt(app, um)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("for the test runner, not for the client")

    app.testing = True  # PROPAGATE_EXCEPTIONS: Flask's rule, kept for the app's test suite
    with pytest.raises(RuntimeError):
        flask_kit.api(app, um).get("/boom")


# --- Werkzeug defaults, overridden ----------------------------------------------------------------


@pytest.fixture
def plain(flask_kit):
    um = flask_kit.um()
    app = flask_kit.app()
    flask_kit.ext.UserMgmt(app, um)

    @app.get("/own")
    def own() -> dict[str, str]:
        return {"mine": "yes"}

    return flask_kit.api(app, um), app


def test_usermgmt_routes_answer_head_and_options_405(plain):
    api, app = plain

    options = api.request("OPTIONS", "/users/me")
    head = app.test_client().head("/health")  # no body to check the invariants on

    assert options.status_code == head.status_code == 405
    assert options.headers["allow"] == "DELETE, GET, PATCH"  # every method of the resource
    assert head.headers["Allow"] == "GET"
    assert head.headers["Content-Type"] == "application/problem+json"


def test_the_apps_own_routes_keep_flasks_head_and_options(plain):
    api, _ = plain

    assert api.request("HEAD", "/own").status_code == 200
    assert api.request("OPTIONS", "/own").status_code == 200


def test_a_trailing_slash_redirects_to_the_route_and_double_slashes_are_404(plain):
    api, app = plain
    client = app.test_client()

    redirected = client.get("/users/me/?x=1")
    followed = api.get("/organizations/")

    assert redirected.status_code == 307
    assert redirected.headers["Location"] == "http://localhost/users/me?x=1"
    assert followed.status_code == 405  # as FastAPI: redirected to POST-only /organizations
    assert followed.headers["allow"] == "POST"
    assert api.get("/users//me").status_code == 404
    assert api.get("/no/such/route/").status_code == 404


# --- the same contract as the FastAPI adapter ------------------------------------------------------


def _route_set(paths: set[tuple[str, str]]) -> set[tuple[str, str]]:
    return {(method, re.sub(r"[{<][^}>]+[}>]", "{}", path)) for method, path in paths}


def test_the_same_routes_as_the_fastapi_adapter(flask_kit):
    pytest.importorskip("fastapi")
    um = flask_kit.um()
    app = flask_kit.app()
    flask_kit.ext.UserMgmt(app, um)
    reference = BUILDERS["fastapi"](um, "testclient")
    try:
        document = reference.openapi()
    finally:
        reference.close()
    assert document is not None

    fastapi_routes = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        if not path.startswith("/_demo")
        for method in item
    }
    flask_routes = {
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("usermgmt.")
        for method in rule.methods or ()
        if method not in {"HEAD", "OPTIONS"}
    }
    assert _route_set(flask_routes) == _route_set(fastapi_routes)


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_SECRET = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]+|\b[0-9a-f]{32}\b|\"next_cursor\":\"[^\"]+\"")
#: Headers whose value is per request (both adapters' ``Allow`` list every method of the
#: resource, so it is compared).
_UNCOMPARED = {"x-request-id", "date", "server"}


def _numbered_ids(text: str) -> str:
    """``text`` with each UUID replaced by its rank of appearance."""
    ids: dict[str, str] = {}
    return _UUID.sub(lambda m: ids.setdefault(m.group(0), f"<id{len(ids)}>"), text)


def _script(api: Api) -> list[tuple[str, int, str, list[tuple[str, str]]]]:
    """The same requests, in the same order, on a fresh world; what each answered."""
    root = api.account(email="root@example.com", superuser=True)
    member = api.account(email="member@example.com")
    org = api.org(root, "Acme", slug="acme")
    api.add_member(org, root, member)
    token = root.token
    login = "/auth/login"
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/users/me", {"token": token}),
        ("GET", "/users/me", {"headers": {"Authorization": "Basic YTpi"}}),
        ("GET", "/users/me", {"headers": {"Authorization": "bearer   " + token}}),
        ("PUT", "/users/me", {}),
        ("GET", "/users/me/", {"token": token}),
        ("POST", "/no/such/route", {"content": b"x" * (2 * 1024 * 1024)}),
        ("GET", "/health", {}),
        ("GET", "/health/queues", {}),
        ("PATCH", "/users/me", {"content": "{bad", "headers": {"Content-Type": "application/json"}}),
        ("PATCH", "/users/me", {"json": {"name": 5}}),
        ("PATCH", "/users/me", {"json": {"name": 5, "x": 1}, "token": token}),
        ("PATCH", "/users/me", {"json": {"name": " G ", "metadata": {"k": 1.5}}, "token": token}),
        ("POST", "/auth/register", {"json": {"email": "new@example.com", "password": PASSWORD}}),
        ("POST", "/auth/register", {"json": {"email": "bad", "password": 5, "x": 1}}),
        ("POST", "/auth/password/forgot", {"json": {"email": "root@example.com"}}),
        ("POST", "/auth/verify-email/resend", {"token": token}),
        ("POST", "/auth/password/reset", {"json": {"token": "t", "password": "x" * 5000}}),
        ("POST", "/auth/refresh", {"json": {"refresh_token": token}}),
        ("GET", "/users", {"params": {"email_prefix": "x" * 300, "limit": "a"}, "token": token}),
        ("GET", "/users", {"params": {"limit": "1", "unknown": "1"}, "token": token}),
        ("GET", f"/organizations/{org}/members", {"params": {"limit": "0"}, "token": token}),
        ("GET", f"/organizations/{org}/invitations", {"params": {"limit": ""}, "token": token}),
        ("GET", f"/organizations/{org}/audit-logs", {"params": {"since": "x"}, "token": token}),
        ("GET", f"/organizations/{org}/audit-logs", {"params": {"action": "x" * 101}}),
        ("GET", f"/organizations/{org}", {"token": member.token}),
        ("GET", "/organizations/junk", {"token": token}),
        ("POST", f"/organizations/{org}/roles", {"json": {"name": "owner"}, "token": token}),
        ("POST", f"/organizations/{org}/invitations", {"json": {"email": "i@example.com"}, "token": token}),
        ("GET", f"/organizations/{org}/permissions/me", {"token": member.token}),
        ("DELETE", "/users/me", {"token": token}),
        ("GET", DEMO_PATH.format(org_id=org), {"token": member.token}),
        ("GET", BOOM_PATH, {"headers": {"X-Request-ID": "boom-1"}}),
        ("POST", "/auth/logout", {"token": token}),
        ("POST", "/auth/logout", {"token": token}),
        ("GET", "/health/live", {"https": True}),
    ]  # fmt: skip
    for content_type in ("application/json", "text/plain", None, "application/problem+json"):
        for body in (b"", b"null", b"[]", b'"text"', b"{", b"\xff", b"[" * 10_000, b'{"a":NaN}'):
            headers = {} if content_type is None else {"Content-Type": content_type}
            calls.append(("POST", login, {"content": body, "headers": headers}))
    answers = []
    for method, path, kwargs in calls:
        response = api.request(method, path, **kwargs)
        text = _numbered_ids(response.text)
        headers = sorted(
            (key.lower(), _SECRET.sub("<secret>", value))
            for key, value in response.headers.items()
            if key.lower() not in _UNCOMPARED
        )
        answers.append(
            (
                f"{method} {_UUID.sub('<id>', path)}",
                response.status_code,
                _SECRET.sub("<x>", text),
                headers,
            )
        )
    return answers


def test_the_same_answers_as_the_fastapi_adapter(flask_kit):
    pytest.importorskip("fastapi")
    reference_um, flask_um = flask_kit.um(), flask_kit.um()
    reference = BUILDERS["fastapi"](reference_um, "testclient")
    try:
        expected = _script(Api("fastapi", reference_um, reference))
    finally:
        reference.close()
    flask = BUILDERS["flask"](flask_um, "testclient")  # with the demo routes

    answered = _script(Api("flask", flask_um, flask))

    for want, got in zip(expected, answered, strict=True):
        assert got == want
