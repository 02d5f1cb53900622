"""Review findings on the OIDC client: provider response caps and deadline, https only,
ID token times, failed callbacks audited, error codes in messages. Over HTTP on both
adapters against the real (misbehaving) test provider, or on the functions directly."""

from __future__ import annotations

from typing import Any

import pytest

from tests.oauth.conftest import OAuthApp, set_cookies
from tests.oauth.provider import TestProvider
from usermgmt.config import Settings, provider_url_allowed
from usermgmt.errors import ConfigurationError
from usermgmt.oauth import providers as oidc
from usermgmt.oauth.providers import safe_error_code


def _problem(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["code"] == code, response.text


# --- provider answers: size cap and overall deadline ---------------------------------------


def test_oauth_provider_answer_stops_at_the_size_cap(
    oauth: OAuthApp, provider: TestProvider
) -> None:
    """A provider sending an endless body is cut off near the 1 MB cap, not downloaded
    whole and trimmed afterwards."""
    provider.misbehave = "discovery_huge"
    _problem(oauth.browser().get("/auth/oauth/test/authorize"), 503, "oauth_provider_unavailable")
    assert provider.streamed_bytes < 20_000_000  # of 52 MB (the rest: socket buffers)


def test_oauth_provider_answer_has_an_overall_deadline(
    oauth: OAuthApp, provider: TestProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each read comes well within the timeout, the whole answer does not: refused
    (a per-read timeout alone would accept it after 2 s)."""
    monkeypatch.setattr(oidc, "HTTP_TIMEOUT_SECONDS", 0.5)
    provider.misbehave = "discovery_slow"
    _problem(oauth.browser().get("/auth/oauth/test/authorize"), 503, "oauth_provider_unavailable")
    provider.misbehave = None
    assert oauth.browser().get("/auth/oauth/test/authorize").status_code == 302


# --- https only, except on loopback -----------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://idp.example/.well-known/openid-configuration", True),
        ("http://127.0.0.1:8080/", True),
        ("http://localhost/x", True),
        ("http://[::1]:9000/", True),
        ("http://idp.example/", False),
        ("http://127.0.0.1.evil.example/", False),
        ("http://localhost.evil.example/", False),
        ("http://10.0.0.1/", False),
        ("ftp://idp.example/", False),
        ("https:///no-host", False),
    ],
)
def test_provider_url_allowed(url: str, allowed: bool) -> None:
    assert provider_url_allowed(url) is allowed


def test_provider_settings_refuse_plain_http_off_loopback() -> None:
    entry = {"name": "a", "client_id": "c", "client_secret": "s"}
    with pytest.raises(ConfigurationError, match="https://"):
        Settings.for_tests(oidc_providers=[{**entry, "issuer": "http://idp.example"}])
    with pytest.raises(ConfigurationError, match="https://"):
        Settings.for_tests(
            oidc_providers=[
                {**entry, "discovery_url": "http://idp.example/.well-known/openid-configuration"}
            ]
        )
    loopback = Settings.for_tests(oidc_providers=[{**entry, "issuer": "http://127.0.0.1:9999"}])
    assert loopback.oidc_providers[0].issuer == "http://127.0.0.1:9999"


def test_oauth_discovery_with_a_plain_http_endpoint_is_refused(
    oauth: OAuthApp, provider: TestProvider
) -> None:
    provider.misbehave = "http_endpoint"
    _problem(oauth.browser().get("/auth/oauth/test/authorize"), 503, "oauth_provider_unavailable")


# --- ID token times ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "misbehave", ["exp_nan", "exp_infinite", "iat_missing", "iat_nan", "iat_old", "iat_future"]
)
def test_oauth_idtoken_times(oauth: OAuthApp, provider: TestProvider, misbehave: str) -> None:
    provider.misbehave = misbehave
    _problem(oauth.sign_in(provider), 400, "oauth_id_token_invalid")
    assert oauth.um.backends.uow.store.users == {}


# --- failed callbacks are audited --------------------------------------------------------------


def test_oauth_state_and_cookie_failures_are_audited(
    oauth: OAuthApp, provider: TestProvider
) -> None:
    attacker = oauth.browser()
    back = provider.login(oauth.authorize(attacker))
    _problem(oauth.browser().get(back), 400, "oauth_state_invalid")  # no cookie
    # a failed callback keeps the cookie: the URL may be someone else's (login CSRF),
    # and clearing it would break this browser's own flow in progress
    failed = oauth.callback(attacker, back)
    _problem(failed, 400, "oauth_state_invalid")
    assert not [c for c in set_cookies(failed) if c.startswith("um_oauth=")]
    _problem(oauth.browser().get("/auth/oauth/nope/callback?state=x&code=y"), 404, "not_found")
    failures = oauth.events("user.login_failed")
    assert [(e.metadata["provider"], e.metadata["reason"]) for e in failures] == [
        ("test", "oauth_state_invalid"),
        ("test", "oauth_state_invalid"),
        ("unknown", "not_found"),
    ]


# --- error codes quoted in messages ------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        ("access_denied", "access_denied"),
        ("invalid_grant", "invalid_grant"),
        ("Access_Denied", "error"),
        ("ééé", "error"),
        ("", "error"),
        ("a" * 65, "error"),
        ("access_denied\n", "error"),
        (None, "error"),
    ],
)
def test_safe_error_code(error: object, shown: str) -> None:
    assert safe_error_code(error) == shown
