"""OAuth / OIDC sign-in over HTTP, both adapters, against real providers on loopback.

* ``provider``: :class:`tests.oauth.provider.TestProvider` (our own, can misbehave);
* ``mock_provider``: oidc-provider-mock 0.3 in a subprocess (a third-party provider with
  its own authorization page; users are set through its ``PUT /users/<sub>``).

A :class:`Browser` is one user agent: a test client of the adapter's application that
keeps cookies and never follows redirects, so each hop is checked. Every response goes
through the HTTP contract's invariants (``tests.http.conftest.check_invariants``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.email import free_port
from tests.http.conftest import ADAPTERS, OBSERVED, ApiResponse, Headers, check_invariants
from tests.oauth.provider import TestProvider, running_provider
from usermgmt.app import UserManagement
from usermgmt.config import Settings

APP_URL = "http://testserver"
CALLBACK = APP_URL + "/auth/oauth/{name}/callback"
DEFAULT_TARGET = APP_URL + "/oauth/complete"


# --- providers ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _provider_server() -> Iterator[TestProvider]:
    with running_provider() as provider:
        yield provider


@pytest.fixture
def provider(_provider_server: TestProvider) -> TestProvider:
    """Our provider, reset: a fresh identity, behaving."""
    p = _provider_server
    p.misbehave = None
    p.identity = {"sub": "sub-alice", "email": "alice@example.com", "email_verified": True}
    p.authorize_requests.clear()
    p.token_requests.clear()
    return p


@dataclass
class MockProvider:
    issuer: str

    def settings_entry(self, name: str = "mock") -> dict[str, Any]:
        return {
            "name": name,
            "discovery_url": self.issuer + "/.well-known/openid-configuration",
            "client_id": "usermgmt-mock-client",
            "client_secret": "mock-client-secret",
            "display_name": "the mock provider",
        }

    def set_user(self, sub: str, **claims: Any) -> None:
        response = httpx.put(f"{self.issuer}/users/{sub}", json=claims, timeout=10)
        assert response.status_code == 204, response.text

    def login(self, authorization_url: str, sub: str) -> str:
        """Submit the provider's authorization form as ``sub``; the redirect back."""
        page = httpx.get(authorization_url, timeout=10)
        assert page.status_code == 200, page.text
        assert "<form" in page.text
        response = httpx.post(authorization_url, data={"sub": sub}, timeout=10)
        assert response.status_code == 302, response.text
        return response.headers["location"]


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


@pytest.fixture(scope="session")
def mock_provider() -> Iterator[MockProvider]:
    """oidc-provider-mock (``python -m oidc_provider_mock``) on a free loopback port."""
    with running_mock_provider() as mock:
        yield mock


@contextmanager
def running_mock_provider() -> Iterator[MockProvider]:
    """oidc-provider-mock in a subprocess (its own process: it warns about its Authlib
    usage, which the test session turns into errors), stopped afterwards by PID."""
    port = free_port()
    process = subprocess.Popen(  # noqa: S603 - our interpreter, fixed arguments
        [sys.executable, "-m", "oidc_provider_mock", "--host", "127.0.0.1", "--port", str(port),
         "--require-nonce", "true"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    try:
        wait_for_port(port, process)
        yield MockProvider(f"http://127.0.0.1:{port}")
    finally:
        process.terminate()
        process.wait(10)


# --- browsers ------------------------------------------------------------------------------


class Browser:
    """One user agent on the application: keeps its cookies, follows no redirect."""

    def __init__(self, adapter: str, app: Any, peer: str = "198.51.100.7") -> None:
        self.adapter = adapter
        self.app = app
        if adapter == "fastapi":
            from starlette.testclient import TestClient

            self._client: Any = TestClient(
                app, base_url=APP_URL, follow_redirects=False, client=(peer, 50000)
            )
        else:
            self._client = app.test_client()
            self._client.environ_base.update({"REMOTE_ADDR": peer})

    def request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> ApiResponse:
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        if self.adapter == "fastapi":
            response = self._client.request(method, path, json=json, headers=sent)
            result = ApiResponse(
                response.status_code,
                Headers(list(response.headers.multi_items())),
                response.content,
            )
        else:
            response = self._client.open(
                path, method=method, json=json, headers=sent, follow_redirects=False
            )
            result = ApiResponse(
                response.status_code, Headers(list(response.headers.items())), response.get_data()
            )
        check_invariants(method, parts.path, result)
        # what the OpenAPI coverage test (tests/http/test_openapi.py) checks is declared
        OBSERVED.setdefault(self.adapter, set()).add((method, parts.path, result.status_code))
        return result

    def get(self, url: str, **kw: Any) -> ApiResponse:
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw: Any) -> ApiResponse:
        return self.request("POST", url, **kw)

    def delete(self, url: str, **kw: Any) -> ApiResponse:
        return self.request("DELETE", url, **kw)

    def close(self) -> None:
        if self.adapter == "fastapi":
            self._client.close()


def query_of(url: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}


def set_cookies(response: ApiResponse) -> list[str]:
    return [v for k, v in response.headers.items() if k.lower() == "set-cookie"]


def oauth_cookie(response: ApiResponse) -> str:
    """The value of the ``um_oauth`` cookie the response sets."""
    values = [c.split(";")[0].split("=", 1)[1] for c in set_cookies(response)]
    names = [c.split("=", 1)[0] for c in set_cookies(response)]
    assert "um_oauth" in names, set_cookies(response)
    return values[names.index("um_oauth")]


# --- the application -----------------------------------------------------------------------


@dataclass
class OAuthApp:
    adapter: str
    um: UserManagement
    app: Any
    browsers: list[Browser] = field(default_factory=list)
    #: the browser of the last callback(): exchange() uses it by default (the code is
    #: bound to the browser that finished the callback)
    last: Browser | None = None

    def browser(self, peer: str = "198.51.100.7") -> Browser:
        b = Browser(self.adapter, self.app, peer)
        self.browsers.append(b)
        return b

    def authorize(
        self, browser: Browser, name: str = "test", redirect_url: str | None = None
    ) -> str:
        """Start the flow; the provider's authorization URL (the cookie is set)."""
        path = f"/auth/oauth/{name}/authorize"
        if redirect_url is not None:
            from urllib.parse import urlencode

            path += "?" + urlencode({"redirect_url": redirect_url})
        response = browser.get(path)
        assert response.status_code == 302, response.text
        assert any(c.startswith("um_oauth=") for c in set_cookies(response))
        return response.headers["location"]

    def callback(self, browser: Browser, back: str) -> ApiResponse:
        """Follow the provider's redirect back to us."""
        assert back.startswith(APP_URL + "/auth/oauth/"), back
        self.last = browser
        return browser.get(back)

    def sign_in(self, provider: TestProvider, browser: Browser | None = None) -> ApiResponse:
        """The whole browser flow with our provider; the callback's response."""
        browser = browser or self.browser()
        return self.callback(browser, provider.login(self.authorize(browser)))

    def code_of(self, response: ApiResponse) -> str:
        assert response.status_code == 302, response.text
        location = response.headers["location"]
        assert location.startswith(DEFAULT_TARGET), location
        return query_of(location)["code"]

    def exchange(self, code: str, browser: Browser | None = None) -> ApiResponse:
        return (browser or self.last or self.browser()).post(
            "/auth/oauth/exchange", json={"code": code}
        )

    def tokens(self, provider: TestProvider) -> dict[str, Any]:
        response = self.exchange(self.code_of(self.sign_in(provider)))
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def events(self, action: str | None = None) -> list[Any]:
        """Audit events, oldest first."""
        from usermgmt.ports import AuditQuery

        found = self.um.kernel.read(
            lambda uow: uow.audit.list(AuditQuery(action=action), limit=1000, before=None)
        )
        return list(reversed(found))

    def user(self, user_id: str) -> Any:
        from uuid import UUID

        return self.um.users.get(UUID(user_id))

    def me(self, token: str) -> dict[str, Any]:
        response = self.browser().get("/users/me", token=token)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


def build_app(adapter: str, um: UserManagement) -> Any:
    if adapter == "fastapi":
        from fastapi import FastAPI

        import usermgmt_fastapi

        app = FastAPI()
        usermgmt_fastapi.mount(app, um)
        return app
    from flask import Flask

    import usermgmt_flask

    app = Flask("usermgmt_oauth_tests", static_folder=None)
    usermgmt_flask.UserMgmt(app, um)
    return app


@pytest.fixture(params=ADAPTERS)
def adapter(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def bind(adapter: str, app: Any, um: UserManagement) -> None:
    """Make a built application serve another UserManagement (as tests/http does:
    building and mounting an application is the slow part)."""
    if adapter == "fastapi":
        app.state.usermgmt = um
    else:
        app.extensions["usermgmt"].um = um


@pytest.fixture(scope="session")
def _apps() -> dict[str, Any]:
    """One application per adapter for the session, re-bound by each test."""
    return {}


@pytest.fixture
def oauth_factory(
    adapter: str, provider: TestProvider, mock_provider: MockProvider, _apps: dict[str, Any]
) -> Iterator[Callable[..., OAuthApp]]:
    """``oauth_factory(**settings)``: the API on ``adapter`` with both providers
    configured (``test`` and ``mock``), in-memory backends on the system clock."""
    made: list[OAuthApp] = []

    def factory(*, clock: Any = None, **settings: Any) -> OAuthApp:
        values: dict[str, Any] = {
            "app_url": APP_URL,
            "rate_limit_max_requests": 100_000,
            "oidc_providers": [provider.settings_entry(), mock_provider.settings_entry()],
            **settings,
        }
        um = UserManagement.in_memory(Settings.for_tests(**values), clock=clock)
        if adapter not in _apps:
            _apps[adapter] = build_app(adapter, um)
        bind(adapter, _apps[adapter], um)
        made.append(OAuthApp(adapter, um, _apps[adapter]))
        return made[-1]

    yield factory
    for item in made:
        for browser in item.browsers:
            browser.close()
        item.um.close()


@pytest.fixture
def oauth(oauth_factory: Callable[..., OAuthApp]) -> OAuthApp:
    return oauth_factory()
