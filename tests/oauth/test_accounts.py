"""Accounts: sign-up, linking rules (SEC-OA-05/06), explicit link and unlink, the one-time
exchange code; over HTTP on both adapters against a real provider."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from tests.oauth.conftest import DEFAULT_TARGET, MockProvider, OAuthApp, oauth_cookie
from tests.oauth.provider import TestProvider
from usermgmt.clock import FakeClock
from usermgmt.testing import create_user
from usermgmt.testing.contracts import race


def _password_user(oauth: OAuthApp, email: str = "alice@example.com") -> tuple[str, str]:
    user, password = create_user(oauth.um, email, verified=True)
    token = oauth.um.auth.login(email=user.email, password=password).access_token
    return str(user.id), token


# --- SEC-OA-05 / 06: never linked on email alone --------------------------------------------------


def test_oauth_link_by_sub_not_email(oauth: OAuthApp, provider: TestProvider) -> None:
    """Same email, another ``sub``: not signed in to the existing account."""
    owner_id, _ = _password_user(oauth)
    provider.identity = {
        "sub": "attacker-sub",
        "email": "alice@example.com",
        "email_verified": True,
    }
    response = oauth.sign_in(provider)
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "oauth_account_not_linked"
    assert oauth.um.oauth.accounts(oauth.user(owner_id).id) == []
    sessions = list(oauth.um.backends.uow.store.sessions.values())
    assert [str(s.user_id) for s in sessions] == [owner_id]  # the owner's password session only
    assert len(oauth.um.backends.uow.store.users) == 1
    refused = oauth.events("oauth.link_refused")
    assert [(e.target_id, e.outcome) for e in refused] == [(owner_id, "denied")]


@pytest.mark.parametrize(
    ("setting", "verified", "linked"),
    [(False, True, False), (True, False, False), (True, True, True)],
    ids=["setting-off", "email-unverified", "setting-on-and-verified"],
)
def test_oauth_no_autolink_unverified(
    oauth_factory: Callable[..., OAuthApp],
    provider: TestProvider,
    setting: bool,
    verified: bool,
    linked: bool,
) -> None:
    oauth = oauth_factory(oauth_link_verified_email=setting)
    owner_id, _ = _password_user(oauth, "carol@example.com")
    provider.identity = {
        "sub": "carol-sub",
        "email": "Carol@example.com",
        "email_verified": verified,
    }
    response = oauth.sign_in(provider)
    if not linked:
        if verified:
            assert response.status_code == 409
            assert response.json()["code"] == "oauth_account_not_linked"
        else:  # refused before the address is looked up: no existence leak
            assert response.status_code == 403
            assert response.json()["code"] == "email_not_verified"
        assert oauth.um.oauth.accounts(oauth.user(owner_id).id) == []
        return
    tokens = oauth.exchange(oauth.code_of(response)).json()
    assert oauth.me(tokens["access_token"])["id"] == owner_id
    accounts = oauth.um.oauth.accounts(oauth.user(owner_id).id)
    assert [(a.provider, a.subject) for a in accounts] == [("test", "carol-sub")]
    assert [e.metadata["automatic"] for e in oauth.events("oauth.linked")] == [True]


def test_oauth_no_autolink_onto_an_unverified_account(
    oauth_factory: Callable[..., OAuthApp], provider: TestProvider
) -> None:
    """Pre-registration takeover: someone registers the victim's address with their own
    password and never verifies it; the victim's verified provider identity must not be
    linked to that account (the squatter's password would keep working)."""
    oauth = oauth_factory(oauth_link_verified_email=True)
    squatter, _ = create_user(oauth.um, "victim@example.com", verified=False)
    provider.identity = {"sub": "victim-sub", "email": "victim@example.com", "email_verified": True}
    response = oauth.sign_in(provider)
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "oauth_account_not_linked"
    assert oauth.um.oauth.accounts(squatter.id) == []
    assert oauth.user(str(squatter.id)).is_verified is False
    assert [e.target_id for e in oauth.events("oauth.link_refused")] == [str(squatter.id)]


@pytest.mark.parametrize("required", [False, True], ids=["default", "verified-required"])
def test_oauth_signup_refused_for_an_unverified_provider_email(
    oauth_factory: Callable[..., OAuthApp], provider: TestProvider, required: bool
) -> None:
    """Whatever REQUIRE_VERIFIED_EMAIL says: an address the provider does not vouch for
    could be anyone's, so no account is created on it."""
    oauth = oauth_factory(require_verified_email=required)
    provider.identity = {"sub": "dave-sub", "email": "dave@example.com", "email_verified": False}
    response = oauth.sign_in(provider)
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "email_not_verified"
    assert oauth.um.backends.uow.store.users == {}


def test_oauth_signup_with_verified_email_is_verified(
    oauth: OAuthApp, provider: TestProvider
) -> None:
    provider.identity = {"sub": "dave-sub", "email": "dave@example.com", "email_verified": True}
    me = oauth.me(oauth.tokens(provider)["access_token"])
    assert me["is_verified"] is True


def test_oauth_signup_refused_when_verified_email_required(
    oauth_factory: Callable[..., OAuthApp], provider: TestProvider
) -> None:
    oauth = oauth_factory(require_verified_email=True)
    provider.identity = {"sub": "erin-sub", "email": "erin@example.com", "email_verified": False}
    response = oauth.sign_in(provider)
    assert response.status_code == 403
    assert response.json()["code"] == "email_not_verified"
    assert oauth.um.backends.uow.store.users == {}


def test_oauth_signup_needs_an_email(oauth: OAuthApp, provider: TestProvider) -> None:
    provider.identity = {"sub": "no-mail"}
    response = oauth.sign_in(provider)
    assert response.status_code == 400
    assert response.json()["code"] == "oauth_email_missing"


def test_oauth_deactivated_user_cannot_sign_in(oauth: OAuthApp, provider: TestProvider) -> None:
    me = oauth.me(oauth.tokens(provider)["access_token"])
    oauth.um.users.deactivate(oauth.user(me["id"]).id)
    response = oauth.sign_in(provider)
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_credentials"


def test_oauth_same_sub_at_two_providers_are_two_identities(
    oauth: OAuthApp, provider: TestProvider, mock_provider: MockProvider
) -> None:
    provider.identity = {"sub": "shared-sub", "email": "frank@example.com", "email_verified": True}
    oauth.tokens(provider)
    mock_provider.set_user("shared-sub", email="frank@example.com", email_verified=True)
    browser = oauth.browser()
    back = mock_provider.login(oauth.authorize(browser, "mock"), "shared-sub")
    response = oauth.callback(browser, back)
    assert response.status_code == 409  # not linked by email, even with the same sub
    assert response.json()["code"] == "oauth_account_not_linked"


# --- explicit link and unlink ----------------------------------------------------------------------


def test_oauth_explicit_link_then_sign_in(oauth: OAuthApp, provider: TestProvider) -> None:
    owner_id, token = _password_user(oauth, "grace@example.com")
    provider.identity = {
        "sub": "grace-sub",
        "email": "grace@gmail.example",
        "email_verified": False,
    }
    browser = oauth.browser()
    started = browser.post("/auth/oauth/test/link", json={}, token=token)
    assert started.status_code == 200, started.text
    assert any(
        v.startswith("um_oauth=") for k, v in started.headers.items() if k.lower() == "set-cookie"
    )
    response = oauth.callback(browser, provider.login(started.json()["authorization_url"]))
    assert response.status_code == 302
    assert response.headers["location"] == DEFAULT_TARGET + "?linked=test"
    listed = browser.get("/users/me/oauth-accounts", token=token)
    assert listed.status_code == 200
    assert [(a["provider"], a["email"]) for a in listed.json()["items"]] == [
        ("test", "grace@gmail.example")
    ]
    # from now on the provider signs in to this account
    assert oauth.me(oauth.tokens(provider)["access_token"])["id"] == owner_id
    assert [e.metadata["automatic"] for e in oauth.events("oauth.linked")] == [False]


def test_oauth_link_needs_a_signed_in_user(oauth: OAuthApp) -> None:
    response = oauth.browser().post("/auth/oauth/test/link", json={})
    assert response.status_code == 401


def test_oauth_link_of_an_identity_owned_by_someone_else(
    oauth: OAuthApp, provider: TestProvider
) -> None:
    oauth.tokens(provider)  # alice-sub signs up on her own
    _, token = _password_user(oauth, "heidi@example.com")
    browser = oauth.browser()
    started = browser.post("/auth/oauth/test/link", json={}, token=token).json()
    response = oauth.callback(browser, provider.login(started["authorization_url"]))
    assert response.status_code == 409
    assert response.json()["code"] == "oauth_account_in_use"
    assert [e.metadata["reason"] for e in oauth.events("oauth.link_failed")] == [
        "oauth_account_in_use"
    ]


def test_oauth_unlink_rules(
    oauth: OAuthApp, provider: TestProvider, mock_provider: MockProvider
) -> None:
    # an OAuth-only user: the only provider cannot go
    tokens = oauth.tokens(provider)
    token = tokens["access_token"]
    browser = oauth.browser()
    refused = browser.delete("/users/me/oauth-accounts/test", token=token)
    assert refused.status_code == 409
    assert refused.json()["code"] == "last_login_method"
    assert browser.delete("/users/me/oauth-accounts/mock", token=token).status_code == 404
    # with a second provider linked, one may go, then the other is the last
    mock_provider.set_user("ivan-mock", email="ivan@example.com", email_verified=True)
    started = browser.post("/auth/oauth/mock/link", json={}, token=token).json()
    back = mock_provider.login(started["authorization_url"], "ivan-mock")
    assert oauth.callback(browser, back).status_code == 302
    assert browser.delete("/users/me/oauth-accounts/test", token=token).status_code == 204
    assert browser.delete("/users/me/oauth-accounts/mock", token=token).status_code == 409
    listed = browser.get("/users/me/oauth-accounts", token=token).json()["items"]
    assert [a["provider"] for a in listed] == ["mock"]
    assert len(oauth.events("oauth.unlinked")) == 1


def test_oauth_unlink_with_a_password(oauth: OAuthApp, provider: TestProvider) -> None:
    _, token = _password_user(oauth, "judy@example.com")
    provider.identity = {"sub": "judy-sub", "email": "judy@example.com", "email_verified": True}
    browser = oauth.browser()
    started = browser.post("/auth/oauth/test/link", json={}, token=token).json()
    assert oauth.callback(browser, provider.login(started["authorization_url"])).status_code == 302
    assert browser.delete("/users/me/oauth-accounts/test", token=token).status_code == 204
    assert browser.get("/users/me/oauth-accounts", token=token).json()["items"] == []


def test_oauth_concurrent_unlinks_keep_one_way_in(
    oauth: OAuthApp, provider: TestProvider, mock_provider: MockProvider
) -> None:
    """Two unlinks at once of a passwordless user's two providers: exactly one wins."""
    token = oauth.tokens(provider)["access_token"]
    mock_provider.set_user("kim-mock", email="kim@example.com", email_verified=True)
    browser = oauth.browser()
    started = browser.post("/auth/oauth/mock/link", json={}, token=token).json()
    oauth.callback(browser, mock_provider.login(started["authorization_url"], "kim-mock"))
    user_id = oauth.um.auth.authenticate(token).id
    results = race(2, lambda i: oauth.um.oauth.unlink(user_id, ["test", "mock"][i]))
    assert sum(r is None for r in results) == 1
    assert len(oauth.um.oauth.accounts(user_id)) == 1


# --- the one-time exchange code ----------------------------------------------------------------


def test_oauth_exchange_code_single_use(oauth: OAuthApp, provider: TestProvider) -> None:
    code = oauth.code_of(oauth.sign_in(provider))
    assert oauth.exchange(code).status_code == 200
    again = oauth.exchange(code)
    assert again.status_code == 400
    assert again.json()["code"] == "token_invalid"
    garbage = oauth.exchange("not a code!")
    assert garbage.status_code == 400


def test_oauth_exchange_code_single_use_under_concurrency(
    oauth: OAuthApp, provider: TestProvider
) -> None:
    response = oauth.sign_in(provider)
    code, cookie = oauth.code_of(response), oauth_cookie(response)
    results = race(20, lambda _: oauth.um.oauth.exchange(code, cookie=cookie))
    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert {type(r).__name__ for r in results if isinstance(r, Exception)} == {"OneTimeTokenError"}


def test_oauth_exchange_code_expires_after_60_seconds(
    oauth_factory: Callable[..., OAuthApp], provider: TestProvider
) -> None:
    clock = FakeClock(datetime.now(UTC))
    oauth = oauth_factory(clock=clock)
    first = oauth.code_of(oauth.sign_in(provider))
    clock.advance(seconds=59)
    assert oauth.exchange(first).status_code == 200
    second = oauth.code_of(oauth.sign_in(provider))
    clock.advance(seconds=61)
    assert oauth.exchange(second).status_code == 400


def test_oauth_providers_listed(oauth: OAuthApp) -> None:
    listed = oauth.browser().get("/auth/oauth/providers")
    assert listed.status_code == 200
    assert [
        (p["name"], p["display_name"], p["authorize_path"]) for p in listed.json()["items"]
    ] == [
        ("test", "the test provider", "/auth/oauth/test/authorize"),
        ("mock", "the mock provider", "/auth/oauth/mock/authorize"),
    ]
