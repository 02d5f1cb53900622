"""Cross-cutting HTTP behaviour: request ids, security headers, the global rate limit,
client addresses behind proxies, body size, and errors nobody expected."""

from __future__ import annotations

import pytest

from tests.http.conftest import BOOM_PATH, TRACE_MARKERS

PASSWORD = "correct horse battery staple"


# --- request id -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_id", ["abc-123", "0f8f2a9c-6f3e-4c1e-9d1e-1b2c3d4e5f60", "x" * 128]
)
def test_a_sane_request_id_is_echoed(api, request_id):
    ok = api.get("/health/live", headers={"X-Request-ID": request_id})
    error = api.get("/users/me", headers={"X-Request-ID": request_id})

    assert ok.headers["x-request-id"] == request_id
    assert error.headers["x-request-id"] == request_id
    assert error.json()["request_id"] == request_id


@pytest.mark.parametrize(
    "request_id", ["", "x" * 129, "has space", "back\\slash", "<script>", 'a"b', "semi;colon"]
)
def test_an_insane_request_id_is_replaced(api, request_id):
    response = api.get("/health/live", headers={"X-Request-ID": request_id})

    generated = response.headers["x-request-id"]
    assert generated != request_id
    assert 16 <= len(generated) <= 128


def test_every_response_gets_a_fresh_request_id(api):
    ids = {api.get("/health/live").headers["x-request-id"] for _ in range(5)}

    assert len(ids) == 5


def test_the_request_id_reaches_the_audit_trail(api):
    account = api.account()
    org = api.org(account)

    api.patch(f"/organizations/{org}", json={"name": "New"}, token=account.token,
              headers={"X-Request-ID": "trace-me-42"})  # fmt: skip

    events = api.get(
        f"/organizations/{org}/audit-logs",
        params={"action": "organization.updated"},
        token=account.token,
    ).json()["items"]
    assert events[0]["request_id"] == "trace-me-42"


# --- security headers -------------------------------------------------------------------------


def test_security_headers(api):
    account = api.account()

    for response in (
        api.get("/users/me", token=account.token),
        api.get("/users/me"),
        api.get("/health"),
        api.get("/no/such/route"),
    ):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "strict-transport-security" not in response.headers  # plain HTTP


def test_hsts_over_https(api):
    response = api.get("/health/live", https=True)

    hsts = response.headers["strict-transport-security"]
    assert hsts.startswith("max-age=")
    assert int(hsts.split("=")[1].split(";")[0]) >= 31536000


def test_api_responses_are_not_cached(api):
    account = api.account()

    for response in (
        api.post("/auth/login", json={"email": account.email, "password": account.password}),
        api.get("/users/me", token=account.token),
        api.get("/users/me/sessions", token=account.token),
        api.post("/auth/logout", token=account.token),
    ):
        assert response.headers["cache-control"] == "no-store"


# --- errors ---------------------------------------------------------------------------------------


def test_unknown_route_and_wrong_method_are_problem_documents(api):
    missing = api.get("/no/such/route")
    wrong = api.put("/users/me")

    assert missing.status_code == 404
    assert missing.json()["code"] == "not_found"
    assert wrong.status_code == 405
    assert wrong.json()["code"] == "method_not_allowed"
    assert "GET" in wrong.headers["allow"]


def test_a_wrong_method_lists_every_method_of_the_path_in_allow(api):
    # Several routes serve /users/me (GET, PATCH, DELETE): Allow names all of them, on
    # both adapters, not only the first route's (Starlette's own answer).
    wrong = api.put("/users/me")
    login = api.get("/auth/login")

    assert wrong.status_code == login.status_code == 405
    assert wrong.headers["allow"] == "DELETE, GET, PATCH"
    assert login.headers["allow"] == "POST"
    assert wrong.json()["code"] == "method_not_allowed"


def test_an_unexpected_exception_is_a_generic_500(api, caplog):
    caplog.set_level("ERROR", logger="usermgmt.http")

    response = api.get(BOOM_PATH, headers={"X-Request-ID": "boom-1"})

    assert response.status_code == 500
    problem = response.json()
    assert problem["code"] == "internal_error"
    assert problem["request_id"] == "boom-1"
    assert "boom-1" in problem["detail"]
    for marker in (*TRACE_MARKERS, "RuntimeError", "SELECT", "password_hash"):
        assert marker not in response.text
    assert any("RuntimeError" in r.getMessage() for r in caplog.records)  # logged, not sent


def test_an_unexpected_exception_in_a_service_is_a_generic_500(api, monkeypatch):
    account = api.account()

    def broken(*args, **kwargs):
        raise RuntimeError("psycopg.OperationalError: connection to 10.0.0.5 failed")

    monkeypatch.setattr(api.um.organizations, "list_for_user", broken)
    response = api.get("/users/me/organizations", token=account.token)

    assert response.status_code == 500
    assert "10.0.0.5" not in response.text
    assert "psycopg" not in response.text


def test_a_backend_error_is_503_without_its_detail(api, monkeypatch):
    from usermgmt.errors import BackendUnavailable

    account = api.account()

    def down(*args, **kwargs):
        raise BackendUnavailable("could not connect to server at db.internal:5432")

    monkeypatch.setattr(api.um.organizations, "list_for_user", down)
    response = api.get("/users/me/organizations", token=account.token)

    assert response.status_code == 503
    assert response.json()["code"] == "backend_unavailable"
    assert "db.internal" not in response.text


# --- body size --------------------------------------------------------------------------------------


def test_a_streamed_body_over_the_limit_is_413(api):
    chunk = b"x" * 65536

    def stream():
        yield b'{"email": "a@example.com", "password": "'
        for _ in range(20):  # 1.25 MiB, sent without Content-Length
            yield chunk
        yield b'"}'

    response = api.post(
        "/auth/login", content=stream(), headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


def test_a_body_just_under_the_limit_is_read(api):
    body = '{"email": "a@example.com", "password": "' + "x" * (1024 * 1024 - 100) + '"}'

    response = api.post("/auth/login", content=body, headers={"Content-Type": "application/json"})

    assert response.status_code == 422  # read and validated: too long a password
    assert response.json()["code"] == "password_too_long"


# --- the global rate limit ----------------------------------------------------------------------


def test_global_rate_limit(api_factory):
    api = api_factory(rate_limit_max_requests=5)
    account = api.account()

    allowed = [api.get("/users/me", token=account.token) for _ in range(5)]
    refused = api.get("/users/me", token=account.token)

    assert [r.status_code for r in allowed] == [200] * 5
    assert [r.headers["ratelimit-remaining"] for r in allowed] == ["4", "3", "2", "1", "0"]
    assert all(r.headers["ratelimit-limit"] == "5" for r in allowed)
    assert 0 < int(allowed[0].headers["ratelimit-reset"]) <= 60
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["ratelimit-limit"] == "5"
    assert refused.headers["ratelimit-remaining"] == "0"
    assert int(refused.headers["ratelimit-reset"]) >= 1
    # unauthenticated calls count too; the window frees up with time
    assert (
        api.post("/auth/login", json={"email": "x@example.com", "password": PASSWORD}).status_code
        == 429
    )
    api.clock.advance(seconds=61)
    assert api.get("/users/me", token=account.token).status_code == 200


def test_health_endpoints_are_not_rate_limited(api_factory):
    api = api_factory(rate_limit_max_requests=2)

    statuses = [api.get("/health/live").status_code for _ in range(10)]

    assert statuses == [200] * 10
    assert "ratelimit-limit" not in api.get("/health").headers


def test_rate_limit_can_be_disabled(api_factory):
    api = api_factory(rate_limit_max_requests=1, rate_limit_enabled=False)

    statuses = [api.get("/users/me").status_code for _ in range(5)]

    assert statuses == [401] * 5
    assert "ratelimit-limit" not in api.get("/users/me").headers


# --- client address (SEC-RL-07) -------------------------------------------------------------------


def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(api_factory):
    api = api_factory(peer="203.0.113.9", rate_limit_max_requests=3)

    statuses = [
        api.get("/users/me", headers={"X-Forwarded-For": f"198.51.100.{n}"}).status_code
        for n in range(4)
    ]

    # spoofed addresses do not buy a fresh budget: the peer's is used up
    assert statuses == [401, 401, 401, 429]


def test_x_forwarded_for_from_an_untrusted_peer_is_not_audited(api_factory):
    api = api_factory(peer="203.0.113.9")
    account = api.account()

    api.post(
        "/organizations",
        json={"name": "Acme"},
        token=account.token,
        headers={"X-Forwarded-For": "198.51.100.77"},
    )

    org = api.get("/users/me/organizations", token=account.token).json()["items"][0]
    events = api.get(
        f"/organizations/{org['organization']['id']}/audit-logs", token=account.token
    ).json()["items"]
    assert events[0]["ip"] == "203.0.113.9"


def test_x_forwarded_for_behind_a_trusted_proxy(api_factory):
    api = api_factory(peer="10.0.0.2", trusted_proxies="10.0.0.0/8", rate_limit_max_requests=2)
    account = api.account()

    first = [
        api.get("/users/me", token=account.token, headers={"X-Forwarded-For": "198.51.100.1"})
        for _ in range(3)
    ]
    other_client = api.get(
        "/users/me", token=account.token, headers={"X-Forwarded-For": "198.51.100.2, 10.0.0.3"}
    )

    assert [r.status_code for r in first] == [200, 200, 429]
    assert other_client.status_code == 200  # its own budget

    created = api.post(
        "/organizations",
        json={"name": "Proxied"},
        token=account.token,
        headers={"X-Forwarded-For": "198.51.100.3"},
    )
    assert created.status_code == 201
    events = api.um.audit.list(account.user.id, created_org_id(created))
    assert events.items[0].ip == "198.51.100.3"


def created_org_id(response):
    from uuid import UUID

    return UUID(response.json()["id"])


# --- the ASGI wrapper, driven directly --------------------------------------------------------


def _exchange(app, *, scheme="http", method="GET"):
    """One request through UserMgmtMiddleware around the raw ASGI ``app``: the messages
    it sends to the server."""
    import asyncio

    from usermgmt.app import UserManagement
    from usermgmt.clock import FakeClock
    from usermgmt.config import Settings
    from usermgmt_fastapi.middleware import UserMgmtMiddleware

    um = UserManagement.in_memory(Settings.for_tests(), clock=FakeClock())
    middleware = UserMgmtMiddleware(app, um, metrics=False)
    scope = {"type": "http", "method": method, "path": "/raw", "scheme": scheme,
             "headers": [(b"x-request-id", b"given-1")], "client": ("10.0.0.1", 1234),
             "query_string": b"", "http_version": "1.1"}  # fmt: skip
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(middleware(scope, receive, send))
    return sent


def _headers(message):
    return [(bytes(name).lower(), bytes(value)) for name, value in message["headers"]]


@pytest.mark.parametrize("ours", [False, True])
def test_headers_given_as_an_iterator_are_all_kept(ours):
    """ASGI allows any iterable of headers: none of the application's may be lost."""
    own = [(b"content-type", b"text/plain"), (b"content-length", b"2"), (b"x-app", b"1")]
    if ours:
        own.insert(1, (b"X-Request-ID", b"app-set"))

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": iter(own)})
        await send({"type": "http.response.body", "body": b"ok"})

    start = _exchange(app)[0]
    headers = _headers(start)
    names = [name for name, _ in headers]
    for name in (b"content-type", b"content-length", b"x-app", b"x-content-type-options"):
        assert names.count(name) == 1, name
    assert dict(headers)[b"x-request-id"] == b"given-1"
    assert names.count(b"x-request-id") == 1
    assert b"ratelimit-limit" in names


def test_every_path_of_the_wrapper_carries_our_headers_once():
    async def streaming(scope, receive, send):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})  # fmt: skip
        for chunk in (b"a", b"b"):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def failing(scope, receive, send):
        raise RuntimeError("boom")

    async def own_hsts(scope, receive, send):
        headers = [(b"Strict-Transport-Security", b"max-age=1"), (b"RateLimit-Limit", b"7")]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    sent = _exchange(streaming, scheme="https")
    assert [m["type"] for m in sent].count("http.response.start") == 1
    names = [name for name, _ in _headers(sent[0])]
    assert names.count(b"strict-transport-security") == 1  # https only
    assert names.count(b"x-request-id") == names.count(b"ratelimit-limit") == 1

    sent = _exchange(failing, method="HEAD")
    assert sent[0]["status"] == 500
    headers = dict(_headers(sent[0]))
    assert headers[b"x-request-id"] == b"given-1"
    assert headers[b"referrer-policy"] == b"no-referrer"
    assert b"strict-transport-security" not in headers  # plain http

    headers = _headers(_exchange(own_hsts, scheme="https")[0])
    assert [v for n, v in headers if n == b"strict-transport-security"] == [b"max-age=1"]
    assert [v for n, v in headers if n == b"ratelimit-limit"] == [b"7"]  # theirs wins
    assert [n for n, _ in headers].count(b"ratelimit-remaining") == 1
