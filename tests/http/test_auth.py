"""``/auth``: registration, login, refresh, logout, verification, password reset."""

from __future__ import annotations

import pytest

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "another long passphrase for tests"


# --- registration -----------------------------------------------------------------------


def test_register_answers_the_same_for_new_and_existing_emails(api):
    first = api.post("/auth/register", json={"email": "ada@example.com", "password": PASSWORD})
    again = api.post("/auth/register", json={"email": "ADA@example.com", "password": NEW_PASSWORD})

    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    assert set(first.json()) == {"status", "detail"}
    # the existing owner gets a notice instead of a second verification email
    assert [m.template for m in api.outbox.find(to="ada@example.com")] == [
        "verify_email",
        "existing_account",
    ]


def test_register_without_enumeration_prevention_is_201_then_409(api_factory):
    api = api_factory(prevent_enumeration=False)

    created = api.post(
        "/auth/register", json={"email": "bob@example.com", "password": PASSWORD, "name": "Bob"}
    )
    taken = api.post("/auth/register", json={"email": "bob@example.com", "password": PASSWORD})

    assert created.status_code == 201
    body = created.json()
    assert body["email"] == "bob@example.com"
    assert body["name"] == "Bob"
    assert body["is_verified"] is False
    assert taken.status_code == 409
    assert taken.json()["code"] == "email_taken"


@pytest.mark.parametrize(
    ("password", "code"),
    [("short", "password_too_short"), ("1qaz2wsx3edc4rfv", "password_too_common")],
)
def test_register_refuses_weak_passwords(api, password, code):
    response = api.post("/auth/register", json={"email": "c@example.com", "password": password})

    assert response.status_code == 422
    assert response.json()["code"] == code


def test_register_refuses_a_password_over_the_limit_before_hashing(api):
    response = api.post("/auth/register", json={"email": "c@example.com", "password": "x" * 5000})

    assert response.status_code == 422
    assert response.json()["code"] == "password_too_long"


def test_register_refuses_header_injection_in_the_email(api):
    response = api.post(
        "/auth/register", json={"email": "a@b.com\r\nBcc: x@y.com", "password": PASSWORD}
    )

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["email"]


def test_register_cannot_set_privileged_fields(api):
    response = api.post(
        "/auth/register",
        json={"email": "m@example.com", "password": PASSWORD, "is_superuser": True},
    )

    assert response.status_code == 422
    assert response.json()["errors"][0]["type"] == "extra_forbidden"
    assert api.um.users.get_by_email("m@example.com") is None


# --- login, refresh, logout -----------------------------------------------------------------


def test_login_returns_a_token_pair_that_is_not_cached(api):
    account = api.account(email="dan@example.com")

    response = api.post(
        "/auth/login", json={"email": "Dan@Example.com", "password": account.password}
    )

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == api.um.settings.access_token_ttl_seconds
    assert response.headers["cache-control"] == "no-store"
    me = api.get("/users/me", token=body["access_token"])
    assert me.status_code == 200
    assert me.json()["email"] == "dan@example.com"


def test_login_failure_is_the_same_for_unknown_email_and_wrong_password(api):
    account = api.account(email="eve@example.com")

    wrong = api.post("/auth/login", json={"email": account.email, "password": "not the password!"})
    unknown = api.post("/auth/login", json={"email": "nobody@example.com", "password": PASSWORD})

    assert wrong.status_code == unknown.status_code == 401
    strip = {"instance", "request_id"}
    assert {k: v for k, v in wrong.json().items() if k not in strip} == {
        k: v for k, v in unknown.json().items() if k not in strip
    }
    assert wrong.json()["code"] == "invalid_credentials"
    assert wrong.headers["www-authenticate"].startswith("Bearer")


def test_login_is_throttled_per_client_address(api):
    limit = api.um.kernel.limits.login_per_ip.count
    body = {"email": "nobody@example.com", "password": PASSWORD}

    statuses = [api.post("/auth/login", json=body).status_code for _ in range(limit + 1)]

    assert statuses[:limit] == [401] * limit
    assert statuses[-1] == 429
    refused = api.post("/auth/login", json=body)
    assert refused.json()["code"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["ratelimit-remaining"] == "0"


@pytest.mark.parametrize(
    ("path", "limit_name", "needs_token"),
    [
        ("/auth/register", "register_per_ip", False),
        ("/auth/password/forgot", "forgot_per_ip", False),
        ("/auth/refresh", "refresh_per_ip", False),
        ("/auth/verify-email/resend", "resend_per_ip", True),
    ],
)
def test_auth_endpoints_are_throttled_per_client_address(api, path, limit_name, needs_token):
    """SEC-RL-02: each built-in per-IP limit answers 429 with Retry-After once exceeded."""
    limit = getattr(api.um.kernel.limits, limit_name).count
    token = api.account(verified=False).token if needs_token else None

    def call(n):
        body = {
            "/auth/register": {"email": f"r{n}@example.com", "password": PASSWORD},
            "/auth/password/forgot": {"email": f"f{n}@example.com"},
            "/auth/refresh": {"refresh_token": "not-a-token"},
        }.get(path)
        return (
            api.post(path, token=token) if body is None else api.post(path, json=body, token=token)
        )

    statuses = [call(n).status_code for n in range(limit)]
    refused = call(limit)

    assert 429 not in statuses
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1


def test_refresh_rotates_and_detects_reuse(api):
    account = api.account()

    rotated = api.post("/auth/refresh", json={"refresh_token": account.refresh_token})
    assert rotated.status_code == 200
    pair = rotated.json()
    assert pair["refresh_token"] != account.refresh_token
    assert rotated.headers["cache-control"] == "no-store"

    reused = api.post("/auth/refresh", json={"refresh_token": account.refresh_token})
    assert reused.status_code == 401
    assert reused.json()["code"] == "token_reused"
    # the whole session is revoked: the new refresh and access tokens die too
    assert (
        api.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]}).status_code == 401
    )
    assert api.get("/users/me", token=pair["access_token"]).status_code == 401


def test_refresh_refuses_an_access_token(api):
    account = api.account()

    response = api.post("/auth/refresh", json={"refresh_token": account.token})

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


def test_logout_rejects_the_access_token_at_once(api):
    account = api.account()
    other = api.relogin(account)

    response = api.post("/auth/logout", token=account.token)

    assert response.status_code == 204
    assert response.content == b""
    assert response.headers["cache-control"] == "no-store"
    revoked = api.get("/users/me", token=account.token)
    assert revoked.status_code == 401
    assert revoked.json()["code"] == "token_revoked"
    assert (
        api.post("/auth/refresh", json={"refresh_token": account.refresh_token}).status_code == 401
    )
    assert api.get("/users/me", token=other.token).status_code == 200  # other session lives


def test_logout_all_ends_every_session(api):
    account = api.account()
    other = api.relogin(account)

    assert api.post("/auth/logout-all", token=account.token).status_code == 204

    assert api.get("/users/me", token=account.token).status_code == 401
    assert api.get("/users/me", token=other.token).status_code == 401


@pytest.mark.parametrize("path", ["/auth/logout", "/auth/logout-all", "/auth/verify-email/resend"])
def test_user_routes_of_auth_need_a_token(api, path):
    missing = api.post(path)
    garbage = api.post(path, token="not-a-jwt")

    assert missing.status_code == garbage.status_code == 401
    assert missing.json()["code"] == "authentication_failed"
    assert missing.headers["www-authenticate"] == "Bearer"
    assert garbage.json()["code"] == "invalid_token"


# --- email verification ------------------------------------------------------------------------


def test_verify_email_with_the_emailed_token(api):
    api.post("/auth/register", json={"email": "v@example.com", "password": PASSWORD})
    token = api.mail_token("v@example.com", "verify_email")

    verified = api.post("/auth/verify-email", json={"token": token})
    again = api.post("/auth/verify-email", json={"token": token})

    assert verified.status_code == 200
    assert verified.json()["is_verified"] is True
    assert verified.json()["email_verified_at"] is not None
    assert again.status_code == 400
    assert again.json()["code"] == "token_invalid"


def test_verify_email_refuses_a_reset_token(api):
    account = api.account(email="w@example.com", verified=False)
    api.post("/auth/password/forgot", json={"email": account.email})
    reset_token = api.mail_token(account.email, "password_reset")

    response = api.post("/auth/verify-email", json={"token": reset_token})

    assert response.status_code == 400


def test_resend_verification_sends_a_new_link(api):
    account = api.account(email="r@example.com", verified=False)
    before = len(api.outbox.find(to=account.email, template="verify_email"))

    response = api.post("/auth/verify-email/resend", token=account.token)

    assert response.status_code == 202
    assert set(response.json()) == {"status", "detail"}
    assert len(api.outbox.find(to=account.email, template="verify_email")) == before + 1
    token = api.mail_token(account.email, "verify_email")
    assert api.post("/auth/verify-email", json={"token": token}).status_code == 200


@pytest.mark.parametrize("path", ["/auth/verify-email", "/auth/password/reset"])
def test_token_endpoints_accept_no_token_in_the_query_string(api, path):
    """SEC-TK-09: tokens only travel in POST bodies; a GET carrying one is refused and the
    token stays usable."""
    api.post("/auth/register", json={"email": "q@example.com", "password": PASSWORD})
    token = api.mail_token("q@example.com", "verify_email")

    response = api.get(path, params={"token": token})

    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert api.post("/auth/verify-email", json={"token": token}).status_code == 200


# --- password reset -----------------------------------------------------------------------------


def test_forgot_password_answers_202_whether_or_not_the_account_exists(api):
    account = api.account(email="f@example.com")

    known = api.post("/auth/password/forgot", json={"email": account.email})
    unknown = api.post("/auth/password/forgot", json={"email": "ghost@example.com"})

    assert known.status_code == unknown.status_code == 202
    assert known.json() == unknown.json()
    assert api.outbox.last(to=account.email, template="password_reset") is not None
    assert api.outbox.find(to="ghost@example.com") == []


def test_reset_password_sets_the_password_and_returns_no_tokens(api):
    account = api.account(email="g@example.com")
    api.post("/auth/password/forgot", json={"email": account.email})
    token = api.mail_token(account.email, "password_reset")

    response = api.post("/auth/password/reset", json={"token": token, "password": NEW_PASSWORD})

    assert response.status_code == 204
    assert response.content == b""
    assert "access_token" not in response.text
    # every session ended; the token is single-use; the new password works
    assert api.get("/users/me", token=account.token).status_code == 401
    again = api.post("/auth/password/reset", json={"token": token, "password": NEW_PASSWORD})
    assert again.status_code == 400
    assert again.json()["code"] == "token_invalid"
    old = api.post("/auth/login", json={"email": account.email, "password": account.password})
    assert old.status_code == 401
    new = api.post("/auth/login", json={"email": account.email, "password": NEW_PASSWORD})
    assert new.status_code == 200


def test_reset_password_refuses_a_weak_password_and_keeps_the_token(api):
    account = api.account(email="h@example.com")
    api.post("/auth/password/forgot", json={"email": account.email})
    token = api.mail_token(account.email, "password_reset")

    weak = api.post("/auth/password/reset", json={"token": token, "password": "short"})

    assert weak.status_code == 422
    assert weak.json()["code"] == "password_too_short"
    ok = api.post("/auth/password/reset", json={"token": token, "password": NEW_PASSWORD})
    assert ok.status_code == 204


def test_reset_password_with_an_expired_token(api):
    account = api.account(email="i@example.com")
    api.post("/auth/password/forgot", json={"email": account.email})
    token = api.mail_token(account.email, "password_reset")
    api.clock.advance(seconds=api.um.settings.password_reset_ttl_seconds + 1)

    response = api.post("/auth/password/reset", json={"token": token, "password": NEW_PASSWORD})

    assert response.status_code == 400
    assert response.json()["code"] == "token_invalid"
