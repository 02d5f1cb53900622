"""The sign-in flow end to end over HTTP (both adapters), against real providers."""

from __future__ import annotations

from urllib.parse import urlsplit

from tests.oauth.conftest import (
    APP_URL,
    CALLBACK,
    DEFAULT_TARGET,
    MockProvider,
    OAuthApp,
    query_of,
    set_cookies,
)
from tests.oauth.provider import CLIENT_ID, TestProvider


def test_signup_then_login_with_our_provider(oauth: OAuthApp, provider: TestProvider) -> None:
    tokens = oauth.tokens(provider)
    assert tokens["token_type"] == "bearer"
    me = oauth.me(tokens["access_token"])
    assert me["email"] == "alice@example.com"
    assert me["is_verified"] is True  # the provider asserted email_verified
    # a second sign-in of the same identity is the same user, not a new one
    again = oauth.tokens(provider)
    assert oauth.me(again["access_token"])["id"] == me["id"]
    assert oauth.user(me["id"]).password_hash is None  # no password: OAuth only
    registered = oauth.events("user.registered")
    assert [(e.actor_user_id, e.metadata) for e in registered] == [
        (oauth.user(me["id"]).id, {"method": "oauth", "provider": "test"})
    ]
    assert len(oauth.events("oauth.linked")) == 1
    assert [e.metadata.get("method") for e in oauth.events("user.login")] == ["oauth", "oauth"]


def test_signup_and_login_with_oidc_provider_mock(
    oauth: OAuthApp, mock_provider: MockProvider
) -> None:
    mock_provider.set_user("mock-bob", email="bob@example.com", email_verified=True, name="Bob")
    browser = oauth.browser()
    url = oauth.authorize(browser, "mock")
    back = mock_provider.login(url, "mock-bob")
    response = oauth.callback(browser, back)
    tokens = oauth.exchange(oauth.code_of(response)).json()
    me = oauth.me(tokens["access_token"])
    assert me["email"] == "bob@example.com"
    assert me["name"] == "Bob"
    # login again: same account
    back = mock_provider.login(oauth.authorize(browser, "mock"), "mock-bob")
    tokens2 = oauth.exchange(oauth.code_of(oauth.callback(browser, back))).json()
    assert oauth.me(tokens2["access_token"])["id"] == me["id"]


def test_oauth_pkce_s256_and_constant_redirect_uri(oauth: OAuthApp, provider: TestProvider) -> None:
    """SEC-OA-02 and SEC-OA-08: S256 challenge, verifier sent at the token endpoint,
    redirect_uri from configuration even with a hostile Host header."""
    browser = oauth.browser()
    response = browser.get(
        "/auth/oauth/test/authorize",
        headers={"Host": "evil.example", "X-Forwarded-Host": "evil.example"},
    )
    assert response.status_code == 302
    url = response.headers["location"]
    assert url.startswith(provider.issuer + "/authorize?")
    q = query_of(url)
    assert q["code_challenge_method"] == "S256"
    assert len(q["code_challenge"]) == 43
    assert q["redirect_uri"] == CALLBACK.format(name="test")
    assert q["client_id"] == CLIENT_ID
    assert q["response_type"] == "code"
    assert "openid" in q["scope"].split()
    assert len(q["state"]) >= 43
    assert len(q["nonce"]) >= 43
    cookie = next(c for c in set_cookies(response) if c.startswith("um_oauth="))
    lowered = cookie.lower()
    assert "httponly" in lowered
    assert "samesite=lax" in lowered
    assert "path=/" in lowered
    # the provider checks the verifier against the challenge: the flow succeeds
    browser = oauth.browser()
    url = oauth.authorize(browser)
    done = oauth.callback(browser, provider.login(url))
    assert done.status_code == 302
    form = provider.token_requests[-1]["form"]
    assert 43 <= len(form["code_verifier"]) <= 128
    assert form["redirect_uri"] == CALLBACK.format(name="test")


def test_callback_gives_only_a_one_time_code(oauth: OAuthApp, provider: TestProvider) -> None:
    """SEC-OA-09: no provider token reaches the browser; the browser-binding cookie is
    kept for the exchange only (60 s, every path), then cleared by the exchange."""
    response = oauth.sign_in(provider)
    assert response.status_code == 302
    location = response.headers["location"]
    assert urlsplit(location)._replace(query="").geturl() == DEFAULT_TARGET
    assert set(query_of(location)) == {"code"}
    assert "provider-access-" not in response.text + str(response.headers.items())
    assert "provider-refresh-" not in response.text + str(response.headers.items())
    kept = [c.lower() for c in set_cookies(response) if c.startswith("um_oauth=")]
    assert len(kept) == 1
    assert "max-age=60" in kept[0]
    assert "path=/;" in kept[0] + ";"  # covers POST /auth/oauth/exchange
    assert "httponly" in kept[0]
    assert "samesite=lax" in kept[0]
    assert response.headers.get("cache-control") == "no-store"
    assert APP_URL in location
    exchanged = oauth.exchange(query_of(location)["code"])
    assert exchanged.status_code == 200, exchanged.text
    cleared = [c.lower() for c in set_cookies(exchanged) if c.startswith("um_oauth=")]
    assert cleared
    assert "max-age=0" in cleared[0] or "01 jan 1970" in cleared[0]


def test_exchange_code_bound_to_the_browser(oauth: OAuthApp, provider: TestProvider) -> None:
    """Login CSRF: the attacker finishes a sign-in in their browser and plants the code in
    the victim's (``/oauth/complete?code=...``); the victim's browser has not the
    attacker's binding cookie, so the exchange is refused, and the code is not burnt."""
    attacker = oauth.browser()
    code = oauth.code_of(oauth.sign_in(provider, attacker))
    victim = oauth.browser()
    planted = oauth.exchange(code, victim)
    assert planted.status_code == 400, planted.text
    assert planted.json()["code"] == "token_invalid"
    # a victim who signed in elsewhere has a binding cookie, but not this code's
    provider.identity = {"sub": "sub-victim", "email": "victim@example.com", "email_verified": True}
    oauth.code_of(oauth.sign_in(provider, victim))
    assert oauth.exchange(code, victim).status_code == 400
    assert oauth.exchange(code, attacker).status_code == 200  # its own browser still can
