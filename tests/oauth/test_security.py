"""SECURITY.md §1F (SEC-OA-01…09) over HTTP, both adapters, against a real provider.

Every negative case ends in a problem document (400, or 503 for an unavailable
provider) and nobody signed in: no one-time code, no session.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import pytest

from tests.email import free_port
from tests.oauth.conftest import APP_URL, DEFAULT_TARGET, OAuthApp, query_of
from tests.oauth.provider import CLIENT_SECRET, TestProvider
from usermgmt.clock import FakeClock


def _no_sign_in(oauth: OAuthApp) -> None:
    """Nobody got a session or an account."""
    assert oauth.um.backends.uow.store.sessions == {}
    assert oauth.um.backends.uow.store.users == {}


def _problem(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["code"] == code, response.text


# --- SEC-OA-01: state ------------------------------------------------------------------------


def test_oauth_state_missing_is_refused(oauth: OAuthApp, provider: TestProvider) -> None:
    browser = oauth.browser()
    back = provider.login(oauth.authorize(browser))
    without_state = back.split("?")[0] + "?" + urlencode({"code": query_of(back)["code"]})
    _problem(browser.get(without_state), 400, "oauth_state_invalid")
    _problem(browser.get(back.replace("state=", "state=x")), 400, "oauth_state_invalid")
    _no_sign_in(oauth)


def test_oauth_state_bound_to_cookie_missing(oauth: OAuthApp, provider: TestProvider) -> None:
    """The victim's browser (no cookie) lands on the attacker's callback URL."""
    attacker = oauth.browser()
    back = provider.login(oauth.authorize(attacker))
    victim = oauth.browser()
    _problem(victim.get(back), 400, "oauth_state_invalid")
    _no_sign_in(oauth)
    # the state died with the failed attempt: the attacker cannot use it either
    _problem(attacker.get(back), 400, "oauth_state_invalid")


def test_oauth_state_bound_to_cookie_mismatched(oauth: OAuthApp, provider: TestProvider) -> None:
    """Login CSRF: the victim has a cookie of their own flow; it is compared, not just present."""
    attacker = oauth.browser()
    attackers_back = provider.login(oauth.authorize(attacker))
    victim = oauth.browser()
    victims_back = provider.login(oauth.authorize(victim))  # victim's cookie is set
    _problem(victim.get(attackers_back), 400, "oauth_state_invalid")
    _no_sign_in(oauth)
    assert victim.get(victims_back).status_code == 302  # the victim's own flow still works


def test_oauth_state_single_use(oauth: OAuthApp, provider: TestProvider) -> None:
    browser = oauth.browser()
    url = oauth.authorize(browser)
    back = provider.login(url)
    assert oauth.callback(browser, back).status_code == 302
    _problem(browser.get(back), 400, "oauth_state_invalid")  # replayed
    # a second code for the same state (the provider asked again): still refused
    provider_again = provider.login(url)
    _problem(browser.get(provider_again), 400, "oauth_state_invalid")


def test_oauth_state_expires(
    oauth_factory: Callable[..., OAuthApp], provider: TestProvider
) -> None:
    clock = FakeClock(datetime.now(UTC))
    oauth = oauth_factory(clock=clock)
    browser = oauth.browser()
    back = provider.login(oauth.authorize(browser))
    clock.advance(seconds=601)
    _problem(browser.get(back), 400, "oauth_state_invalid")
    _no_sign_in(oauth)


def test_oauth_state_of_another_provider(oauth: OAuthApp, provider: TestProvider) -> None:
    browser = oauth.browser()
    back = provider.login(oauth.authorize(browser))
    other = back.replace("/auth/oauth/test/callback", "/auth/oauth/mock/callback")
    _problem(browser.get(other), 400, "oauth_state_invalid")
    _no_sign_in(oauth)


def test_oauth_provider_error_answer(oauth: OAuthApp, provider: TestProvider) -> None:
    browser = oauth.browser()
    state = query_of(oauth.authorize(browser))["state"]
    denied = f"{APP_URL}/auth/oauth/test/callback?" + urlencode(
        {"state": state, "error": "access_denied", "error_description": "<script>"}
    )
    response = browser.get(denied)
    _problem(response, 400, "oauth_provider_error")
    assert "<script>" not in response.text
    _no_sign_in(oauth)


def test_oauth_unknown_provider_is_404(oauth: OAuthApp) -> None:
    browser = oauth.browser()
    _problem(browser.get("/auth/oauth/nope/authorize"), 404, "not_found")
    _problem(browser.get("/auth/oauth/nope/callback?state=x&code=y"), 404, "not_found")


# --- SEC-OA-03 / 04: the ID token ----------------------------------------------------------------

BAD_TOKENS = [
    ("nonce_other", "oauth_id_token_invalid"),
    ("nonce_missing", "oauth_id_token_invalid"),
    ("aud", "oauth_id_token_invalid"),
    ("aud_multi_no_azp", "oauth_id_token_invalid"),
    ("iss", "oauth_id_token_invalid"),
    ("expired", "oauth_id_token_invalid"),
    ("foreign_key", "oauth_id_token_invalid"),
    ("alg_none", "oauth_id_token_invalid"),
    ("no_id_token", "oauth_id_token_invalid"),
    ("token_error", "oauth_provider_error"),
]


@pytest.mark.parametrize(("misbehave", "code"), BAD_TOKENS)
def test_oauth_idtoken_claims_and_signature(
    oauth: OAuthApp, provider: TestProvider, misbehave: str, code: str
) -> None:
    provider.misbehave = misbehave
    response = oauth.sign_in(provider)
    _problem(response, 400, code)
    assert "location" not in response.headers
    _no_sign_in(oauth)
    failures = oauth.events("user.login_failed")
    assert [(e.metadata["provider"], e.metadata["reason"]) for e in failures] == [("test", code)]


def test_oauth_nonce_sent_and_checked(oauth: OAuthApp, provider: TestProvider) -> None:
    """SEC-OA-03: the nonce of the authorization request is the one the token carries."""
    browser = oauth.browser()
    url = oauth.authorize(browser)
    assert len(query_of(url)["nonce"]) >= 43
    assert oauth.callback(browser, provider.login(url)).status_code == 302


def test_oauth_jwks_cached_and_refetched_once_on_rotation(
    oauth: OAuthApp, provider: TestProvider
) -> None:
    before = provider.jwks_fetches
    assert oauth.sign_in(provider).status_code == 302
    assert oauth.sign_in(provider).status_code == 302
    assert provider.jwks_fetches == before + 1  # cached
    provider.rotate_key()  # the provider signs with a new kid
    assert oauth.sign_in(provider).status_code == 302
    assert provider.jwks_fetches == before + 2  # one refetch for the unknown kid


# --- SEC-OA-07: post-login redirect ----------------------------------------------------------------

OPEN_REDIRECTS = [
    "//evil.com",
    "https://evil.com",
    "http://evil.com/oauth/complete",
    "/\\evil.com",
    "\\\\evil.com",
    "\\/evil.com",
    "https:evil.com",
    "http:/evil.com",
    "%2F%2Fevil.com",
    "/%2F/evil.com",
    "javascript:alert(1)",
    "JaVaScRiPt:alert(document.domain)",
    "data:text/html,<script>alert(1)</script>",
    "https://testserver@evil.com",
    "http://testserver@evil.com/oauth/complete",
    "http://testserver.evil.com/oauth/complete",
    "http://testserver/oauth/complete.evil.com",
    "http://testserver/oauth/complete/../../evil",
    "http://testserver/oauth/complete?next=https://evil.com",
    "http://testserver/oauth/complete#@evil.com",
    "http://TESTSERVER/oauth/complete",
    " http://testserver/oauth/complete",
    "http://testserver/oauth/complete\r\nSet-Cookie: x=1",
    "http://testserver/oauth/complete\t",
    "/oauth/complete\x00",
    "//testserver/oauth/complete",
    "https://testserver/oauth/complete",
    "",
    "x" * 5000,
]


@pytest.mark.parametrize("target", OPEN_REDIRECTS)
def test_oauth_next_param_fuzz(oauth: OAuthApp, provider: TestProvider, target: str) -> None:
    browser = oauth.browser()
    path = "/auth/oauth/test/authorize?redirect_url=" + quote(target, safe="")
    start = browser.get(path)
    if start.status_code == 422:  # too long for the query parameter: refused outright
        assert len(target) > 4096
        return
    assert start.status_code == 302, start.text
    response = oauth.callback(browser, provider.login(start.headers["location"]))
    location = response.headers["location"]
    assert urlsplit(location)._replace(query="").geturl() == DEFAULT_TARGET
    assert location.startswith(DEFAULT_TARGET + "?code=")


def test_oauth_allowlisted_redirects_are_honoured(
    oauth_factory: Callable[..., OAuthApp], provider: TestProvider
) -> None:
    second = "https://spa.example.org/after-login?tab=1"
    oauth = oauth_factory(oauth_redirect_urls=f"{DEFAULT_TARGET},{second}")
    for asked, landed in [
        (second, second + "&code="),
        ("/oauth/complete", DEFAULT_TARGET + "?code="),
        (None, DEFAULT_TARGET + "?code="),
    ]:
        browser = oauth.browser()
        back = provider.login(oauth.authorize(browser, redirect_url=asked))
        location = oauth.callback(browser, back).headers["location"]
        assert location.startswith(landed), (asked, location)


# --- availability (F3) -----------------------------------------------------------------------------


def test_oauth_provider_unreachable_is_503_and_password_login_works(
    oauth_factory: Callable[..., OAuthApp],
) -> None:
    port = free_port()  # nothing listens there
    entry = {
        "name": "down",
        "issuer": f"http://127.0.0.1:{port}",
        "client_id": "c",
        "client_secret": "s",
    }
    oauth = oauth_factory(oidc_providers=[entry])
    browser = oauth.browser()
    _problem(browser.get("/auth/oauth/down/authorize"), 503, "oauth_provider_unavailable")
    from usermgmt.testing import create_user

    user, password = create_user(oauth.um, "pw@example.com", verified=True)
    login = browser.post("/auth/login", json={"email": user.email, "password": password})
    assert login.status_code == 200


def test_oauth_discovery_with_another_issuer_is_refused(
    oauth: OAuthApp, provider: TestProvider
) -> None:
    """OpenID Connect Discovery §4.3: the document must name the configured issuer."""
    provider.misbehave = "discovery_issuer"
    _problem(oauth.browser().get("/auth/oauth/test/authorize"), 503, "oauth_provider_unavailable")


def test_oauth_wrong_client_secret_is_503_not_the_users_fault(
    oauth_factory: Callable[..., OAuthApp], provider: TestProvider
) -> None:
    entry = {**provider.settings_entry(), "client_secret": "not-the-secret"}
    oauth = oauth_factory(oidc_providers=[entry])
    _problem(oauth.sign_in(provider), 503, "oauth_provider_unavailable")
    assert provider.token_requests[-1]["authorization"] is not None  # client_secret_basic
    _no_sign_in(oauth)


def test_oauth_token_endpoint_5xx_is_503(oauth: OAuthApp, provider: TestProvider) -> None:
    provider.misbehave = "token_500"
    _problem(oauth.sign_in(provider), 503, "oauth_provider_unavailable")
    _no_sign_in(oauth)


# --- logs ---------------------------------------------------------------------------------------


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.text: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        # the test's own user agents (the app's test client, the "user" at the provider's
        # authorization page) log the URLs they visit: they are not the library
        if record.name.startswith(("httpcore", "httpx2")) or (
            record.name == "httpx" and ("/authorize?" in message or "testserver" in message)
        ):
            return
        self.text.append(message + " " + repr(record.__dict__))


@pytest.fixture
def logs() -> Iterator[_Capture]:
    handler = _Capture()
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old)


def test_oauth_log_canary(oauth: OAuthApp, provider: TestProvider, logs: _Capture) -> None:
    """No state, code, nonce, verifier, one-time code, token or client secret in any record."""
    browser = oauth.browser()
    url = oauth.authorize(browser)
    back = provider.login(url)
    response = oauth.callback(browser, back)
    one_time = query_of(response.headers["location"])["code"]
    tokens = oauth.exchange(one_time).json()
    provider.misbehave = "nonce_other"
    assert oauth.sign_in(provider).status_code == 400
    secrets_seen = [
        query_of(url)["state"],
        query_of(url)["nonce"],
        query_of(back)["code"],
        provider.token_requests[0]["form"]["code_verifier"],
        one_time,
        tokens["access_token"],
        tokens["refresh_token"],
        CLIENT_SECRET,
    ]
    text = "\n".join(logs.text)
    assert logs.text, "the flow should have logged something"
    leaked = [s[:8] for s in secrets_seen if s in text]
    assert leaked == []
    assert "provider-access-" not in text
    assert json.dumps(text)  # printable


def test_oauth_cookie_secure_on_https(
    oauth_factory: Callable[..., OAuthApp], provider: TestProvider
) -> None:
    oauth = oauth_factory(oauth_callback_base_url="https://api.example.org")
    response = oauth.browser().get("/auth/oauth/test/authorize")
    cookie = next(v for k, v in response.headers.items() if k.lower() == "set-cookie")
    assert "secure" in cookie.lower()
    assert query_of(response.headers["location"])["redirect_uri"] == (
        "https://api.example.org/auth/oauth/test/callback"
    )
