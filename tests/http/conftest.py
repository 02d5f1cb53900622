"""The HTTP contract suite: one set of tests, run against every web adapter.

Tests talk to the ``api`` fixture only (never to a framework): ``api.post(path,
json=..., token=...)`` returns an :class:`ApiResponse` with ``status_code``,
``headers`` and ``json()``. Each adapter is one entry of ``ADAPTERS`` whose builder
mounts a :class:`~usermgmt.UserManagement` on a fresh application and wraps that
framework's test client.

Every response is checked on the way for the contract's invariants (``X-Request-ID``,
security headers, problem documents for errors, no password or token hash in any
body), so each test enforces them on every route it touches.

Setup that is not under test (users, organizations, memberships) goes through the
core services directly: it is faster and keeps the built-in throttles out of the way.
"""

from __future__ import annotations

import importlib.util
import io
import json as jsonlib
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import pytest

from usermgmt.app import UserManagement
from usermgmt.clock import FakeClock
from usermgmt.config import Settings
from usermgmt.models import User
from usermgmt.testing import create_user, extract_token

#: Forbidden anywhere in a response body (SEC-AC-04): hash values...
SECRET_MARKERS = ("$argon2", "$2b$", "$2a$", "$2y$")
#: ... and fields holding them (as keys of any JSON object of the body).
SECRET_FIELDS = frozenset({"password_hash", "token_hash", "hashed_password", "password"})
#: Forbidden in an error body (SEC-LG-06).
TRACE_MARKERS = ("Traceback", "sqlalchemy", 'File "')
#: The permission of the demo route each adapter builder adds (``require_permission``).
DEMO_PERMISSION = "project:read"
DEMO_PATH = "/_demo/orgs/{org_id}/projects"
BOOM_PATH = "/_demo/boom"


# --- responses ---------------------------------------------------------------------------


class Headers:
    """Case-insensitive, read-only response headers (the last value of a repeated one)."""

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = items
        self._map = {k.lower(): v for k, v in items}

    def get(self, key: str, default: str | None = None) -> str | None:
        return self._map.get(key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return self._map[key.lower()]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._map

    def items(self) -> list[tuple[str, str]]:
        """Every header as sent, repeated ones included."""
        return list(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


@dataclass
class ApiResponse:
    status_code: int
    headers: Headers
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return jsonlib.loads(self.content)

    @property
    def media_type(self) -> str:
        return (self.headers.get("content-type") or "").split(";")[0].strip()


class Client(Protocol):
    """What an adapter's builder returns: a test client speaking raw HTTP to an app on
    which the API is mounted. Clients are reused across tests (building an app is the
    slow part); ``bind`` makes the app serve another UserManagement."""

    def bind(self, um: UserManagement) -> None: ...

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        content: bytes | Iterable[bytes] | None,
        params: Mapping[str, str] | None,
    ) -> ApiResponse:
        """``content`` may be an iterable of chunks: sent without Content-Length."""

    def openapi(self) -> dict[str, Any] | None: ...

    def close(self) -> None: ...


# --- the FastAPI adapter -------------------------------------------------------------------


class _StarletteClient:
    def __init__(self, app: Any, peer: str) -> None:
        from starlette.testclient import TestClient

        self._app = app
        self._client = TestClient(app, raise_server_exceptions=False, client=(peer, 50000))
        self._client.__enter__()  # one event loop for every request of the session

    def bind(self, um: UserManagement) -> None:
        self._app.state.usermgmt = um

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        content: bytes | Iterable[bytes] | None,
        params: Mapping[str, str] | None,
    ) -> ApiResponse:
        response = self._client.request(
            method, url, headers=dict(headers), content=content, params=params
        )
        return ApiResponse(
            response.status_code, Headers(list(response.headers.multi_items())), response.content
        )

    def openapi(self) -> dict[str, Any] | None:
        document: dict[str, Any] = self._app.openapi()
        return document

    def close(self) -> None:
        self._client.__exit__(None, None, None)


def build_fastapi(um: UserManagement, peer: str) -> Client:
    # (string annotations in this module: FastAPI only resolves module-level names)
    from fastapi import Depends, FastAPI

    import usermgmt_fastapi

    app = FastAPI()
    usermgmt_fastapi.mount(app, um)

    @app.get(
        DEMO_PATH,
        dependencies=[Depends(usermgmt_fastapi.require_permission(DEMO_PERMISSION))],
    )
    def demo_projects(
        org_id: str,
        user: User = Depends(usermgmt_fastapi.current_user),  # noqa: B008 - FastAPI idiom
    ) -> dict[str, Any]:
        return {"organization_id": org_id, "user_id": str(user.id), "items": []}

    @app.get(BOOM_PATH)
    def demo_boom() -> None:
        raise RuntimeError(
            "sqlalchemy.exc.OperationalError: SELECT password_hash FROM users -- Traceback"
        )

    return _StarletteClient(app, peer)


# --- the Flask adapter ---------------------------------------------------------------------


class _ChunkedInput:
    """A WSGI input stream over an iterable of chunks: a body sent without
    Content-Length, as a server passes a chunked request (``wsgi.input_terminated``)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buffer += chunk
        if size < 0:
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def readline(self, size: int = -1) -> bytes:  # pragma: no cover - WSGI requires it
        return self.read(size)

    def close(self) -> None:
        self._chunks = iter(())


class _WerkzeugClient:
    def __init__(self, app: Any, peer: str) -> None:
        self._app = app
        self._client = app.test_client()
        self._environ_base = {"REMOTE_ADDR": peer, "HTTP_USER_AGENT": "testclient"}
        self._client.environ_base.update(self._environ_base)

    def bind(self, um: UserManagement) -> None:
        self._app.extensions["usermgmt"].um = um

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        content: bytes | Iterable[bytes] | None,
        params: Mapping[str, str] | None,
    ) -> ApiResponse:
        from flask.testing import EnvironBuilder  # the scheme and host come from the URL
        from werkzeug.wrappers import Request

        chunks = None if content is None or isinstance(content, bytes) else content
        builder = EnvironBuilder(
            self._app,
            path=url,
            method=method,
            headers=dict(headers),
            # the bytes as they are (``data`` would encode an empty form body)
            input_stream=io.BytesIO(content) if isinstance(content, bytes) else None,
            query_string=dict(params) if params else None,
            environ_base=self._environ_base,
        )
        environ = builder.get_environ()
        if chunks is not None:
            environ["wsgi.input"] = _ChunkedInput(chunks)
            environ["wsgi.input_terminated"] = True
            environ["HTTP_TRANSFER_ENCODING"] = "chunked"
            environ.pop("CONTENT_LENGTH", None)
        for key, value in headers.items():
            if key.lower() == "content-length":  # as sent, even when it is not a number
                environ["CONTENT_LENGTH"] = value
        response = self._client.open(Request(environ), follow_redirects=True)
        return ApiResponse(
            response.status_code, Headers(list(response.headers.items())), response.get_data()
        )

    def openapi(self) -> dict[str, Any] | None:
        return None

    def close(self) -> None:
        pass


def flask_rule(path: str) -> str:
    """A path template of the FastAPI form (``{org_id}``) as a Werkzeug rule."""
    return re.sub(r"\{(\w+)\}", r"<\1>", path)


def build_flask(um: UserManagement, peer: str) -> Client:
    from flask import Flask

    import usermgmt_flask

    app = Flask("usermgmt_http_tests", static_folder=None)
    usermgmt_flask.UserMgmt(app, um)

    @app.get(flask_rule(DEMO_PATH))
    @usermgmt_flask.permission_required(DEMO_PERMISSION)
    def demo_projects(org_id: str) -> dict[str, Any]:
        user = usermgmt_flask.current_user()
        return {"organization_id": org_id, "user_id": str(user.id), "items": []}

    @app.get(BOOM_PATH)
    def demo_boom() -> None:
        raise RuntimeError(
            "sqlalchemy.exc.OperationalError: SELECT password_hash FROM users -- Traceback"
        )

    return _WerkzeugClient(app, peer)


#: name → builder(um, peer address) -> Client.
BUILDERS: dict[str, Callable[[UserManagement, str], Client]] = {
    "fastapi": build_fastapi,
    "flask": build_flask,
}


def _adapter(name: str, module: str) -> Any:
    """The adapter's parameter, skipped without its framework (``usermgmt[<name>]``)."""
    missing = importlib.util.find_spec(module) is None
    reason = f'needs {module}: pip install "usermgmt[{name}]"'
    if missing and os.environ.get("CI") == "true":
        return pytest.param(name, id=name)  # under CI a missing adapter fails, never skips
    return pytest.param(name, id=name, marks=pytest.mark.skipif(missing, reason=reason))


ADAPTERS = [_adapter("fastapi", "fastapi"), _adapter("flask", "flask")]
#: Adapters serving an OpenAPI document.
OPENAPI_ADAPTERS = [_adapter("fastapi", "fastapi")]


# --- the api fixture -------------------------------------------------------------------------


@dataclass
class Account:
    """A user made for a test, signed in through the core."""

    user: User
    password: str
    token: str
    refresh_token: str
    session_id: str

    @property
    def id(self) -> str:
        return str(self.user.id)

    @property
    def email(self) -> str:
        return self.user.email


_UNSET: Any = object()


@dataclass
class Api:
    adapter: str
    um: UserManagement
    client: Client
    observed: set[tuple[str, str, int]] = field(default_factory=set)
    responses: list[tuple[str, str, ApiResponse]] = field(default_factory=list)

    # --- HTTP ------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = _UNSET,
        content: bytes | str | Iterable[bytes] | None = None,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        https: bool = False,
    ) -> ApiResponse:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        body = content.encode() if isinstance(content, str) else content
        if json is not _UNSET:
            body = jsonlib.dumps(json).encode()
            sent.setdefault("Content-Type", "application/json")
        url = ("https://testserver" if https else "http://testserver") + path
        response = self.client.request(method, url, headers=sent, content=body, params=params)
        check_invariants(method, path, response)
        self.observed.add((method.upper(), path, response.status_code))
        self.responses.append((method.upper(), path, response))
        return response

    def get(self, path: str, **kw: Any) -> ApiResponse:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> ApiResponse:
        return self.request("POST", path, **kw)

    def patch(self, path: str, **kw: Any) -> ApiResponse:
        return self.request("PATCH", path, **kw)

    def put(self, path: str, **kw: Any) -> ApiResponse:
        return self.request("PUT", path, **kw)

    def delete(self, path: str, **kw: Any) -> ApiResponse:
        return self.request("DELETE", path, **kw)

    def openapi(self) -> dict[str, Any] | None:
        return self.client.openapi()

    # --- setup through the core ------------------------------------------------------------

    @property
    def clock(self) -> FakeClock:
        return self.um.fake_clock

    @property
    def outbox(self) -> Any:
        return self.um.outbox

    def account(
        self,
        email: str | None = None,
        *,
        verified: bool = True,
        superuser: bool = False,
        name: str | None = None,
    ) -> Account:
        user, password = create_user(
            self.um, email, name=name, verified=verified, superuser=superuser
        )
        pair = self.um.auth.login(email=user.email, password=password)
        return Account(user, password, pair.access_token, pair.refresh_token, str(pair.session_id))

    def relogin(self, account: Account) -> Account:
        pair = self.um.auth.login(email=account.email, password=account.password)
        return Account(
            account.user, account.password, pair.access_token, pair.refresh_token,
            str(pair.session_id),
        )  # fmt: skip

    def org(self, owner: Account, name: str = "Acme", slug: str | None = None) -> str:
        return str(self.um.organizations.create(owner.user.id, name, slug=slug).id)

    def add_member(
        self, org_id: str, inviter: Account, member: Account, roles: tuple[str, ...] = ("member",)
    ) -> None:
        from uuid import UUID

        self.um.invitations.create(inviter.user.id, UUID(org_id), member.email, list(roles))
        token = self.mail_token(member.email, "invitation")
        self.um.invitations.accept(member.user.id, token)

    def mail_token(self, to: str, template: str) -> str:
        message = self.outbox.last(to=to, template=template)
        assert message is not None, f"no {template} email to {to}"
        return extract_token(message)


def check_invariants(method: str, path: str, response: ApiResponse) -> None:
    """What every response of the API must satisfy, whatever the route."""
    where = f"{method} {path} -> {response.status_code}"
    request_id = response.headers.get("x-request-id")
    assert request_id, f"{where}: no X-Request-ID"
    assert response.headers.get("x-content-type-options") == "nosniff", where
    assert response.headers.get("referrer-policy") == "no-referrer", where
    text = response.text
    for marker in SECRET_MARKERS:
        assert marker not in text, f"{where}: body contains {marker!r}"
    if response.media_type.endswith("json") and response.content:
        leaked = _keys(response.json()) & SECRET_FIELDS
        assert not leaked, f"{where}: body has the field(s) {sorted(leaked)}"
    if response.status_code >= 400 and not _is_health_report(path, response):
        assert response.media_type == "application/problem+json", (where, response.media_type)
        problem = response.json()
        assert problem["status"] == response.status_code, where
        assert isinstance(problem["code"], str), where
        assert problem["code"], where
        assert problem["type"].endswith(problem["code"]) or problem["type"] == "about:blank"
        assert isinstance(problem["title"], str), where
        assert isinstance(problem["detail"], str), where
        assert problem.get("request_id") == request_id, where
        for marker in TRACE_MARKERS:
            assert marker not in text, f"{where}: error body contains {marker!r}"
        assert response.headers.get("cache-control") == "no-store", where
    if response.status_code == 401:
        assert (response.headers.get("www-authenticate") or "").startswith("Bearer"), where


def _is_health_report(path: str, response: ApiResponse) -> bool:
    """A 503 of a health endpoint is its report (the seed's JSON), not a problem."""
    return path.startswith("/health") and response.status_code == 503


def _keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


#: (adapter, method, concrete path, status) seen by the whole session, for the OpenAPI test.
OBSERVED: dict[str, set[tuple[str, str, int]]] = {}


@pytest.fixture(scope="session")
def _clients() -> Iterator[dict[tuple[str, str], Client]]:
    """Test clients by (adapter, peer address), built once per session."""
    clients: dict[tuple[str, str], Client] = {}
    yield clients
    for client in clients.values():
        client.close()


@pytest.fixture(params=ADAPTERS)
def adapter(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def api_factory(
    adapter: str, _clients: dict[tuple[str, str], Client]
) -> Iterator[Callable[..., Api]]:
    """``api_factory(peer="testclient", **settings)`` builds an Api for this test's adapter:
    a fresh in-memory UserManagement on a FakeClock, settings as in ``Settings.for_tests``
    (the global rate limit is set out of the way unless given), served to a client
    whose TCP peer address is ``peer``."""
    made: list[Api] = []

    def factory(*, peer: str = "testclient", **settings: Any) -> Api:
        values: dict[str, Any] = {"rate_limit_max_requests": 100_000, **settings}
        um = UserManagement.in_memory(Settings.for_tests(**values), clock=FakeClock())
        um.register_permission(DEMO_PERMISSION, "Demo permission of the test app")
        key = (adapter, peer)
        if key not in _clients:
            _clients[key] = BUILDERS[adapter](um, peer)
        client = _clients[key]
        client.bind(um)
        api = Api(adapter, um, client)
        api.observed = OBSERVED.setdefault(adapter, set())
        made.append(api)
        return api

    yield factory
    for api in made:
        api.um.close()


@pytest.fixture
def api(api_factory: Callable[..., Api]) -> Api:
    """The default Api: in-memory backends, default settings, global limit out of the way."""
    return api_factory()


# --- Flask-specific tests ------------------------------------------------------------------


@dataclass
class FlaskKit:
    """What the Flask-specific tests build their own applications with (the ``flask_kit``
    fixture), so that the framework stays out of the test modules."""

    flask: Any  # the flask module
    ext: Any  # usermgmt_flask
    made: list[UserManagement] = field(default_factory=list)

    def um(self, **settings: Any) -> UserManagement:
        """A fresh in-memory UserManagement, as ``api_factory`` makes them."""
        values: dict[str, Any] = {"rate_limit_max_requests": 100_000, **settings}
        um = UserManagement.in_memory(Settings.for_tests(**values), clock=FakeClock())
        um.register_permission(DEMO_PERMISSION, "Demo permission of the test app")
        self.made.append(um)
        return um

    def app(self) -> Any:
        """A bare Flask application (no static route)."""
        return self.flask.Flask("usermgmt_flask_tests", static_folder=None)

    def api(self, app: Any, um: UserManagement, *, peer: str = "testclient") -> Api:
        """An Api speaking to ``app`` (set up with ``um``), with the contract's checks."""
        return Api("flask", um, _WerkzeugClient(app, peer))


@pytest.fixture
def flask_kit() -> Iterator[FlaskKit]:
    """Flask and usermgmt_flask for the Flask-specific tests (skipped without Flask)."""
    if os.environ.get("CI") == "true":
        import flask  # under CI a missing Flask must fail, not skip
    else:
        flask = pytest.importorskip("flask")
    import usermgmt_flask

    kit = FlaskKit(flask, usermgmt_flask)
    yield kit
    for um in kit.made:
        um.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the OpenAPI coverage test after every other HTTP test, so that it sees the
    statuses they observed."""
    last = [item for item in items if item.nodeid.startswith("tests/http/test_openapi.py")]
    if last:
        others = [item for item in items if item not in last]
        items[:] = others + last
