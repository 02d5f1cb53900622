"""No secrets in logs or audit rows, one audit event per flow (SEC-LG-01, SEC-LG-03)."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import pytest

from usermgmt.errors import EmailDeliveryError, InvalidCredentials, TokenReused, WrongPassword
from usermgmt.security.opaque import hash_token
from usermgmt.testing import extract_token, make_um

CANARY_PASSWORD = "CANARY-PW-0123456789-register"
CANARY_NEW = "CANARY-PW-0123456789-changed"
CANARY_RESET = "CANARY-PW-0123456789-reset"
CANARY_WRONG = "CANARY-PW-0123456789-wrong"


def test_auth_canary_no_secrets_in_logs_or_audit(
    caplog: pytest.LogCaptureFixture, auth_audit: Any
) -> None:
    """SEC-LG-03: run every authentication flow (including failures and an email outage)
    with sentinel passwords; no password, raw token, token hash or reset link appears in
    any log record or audit row."""
    caplog.set_level(logging.DEBUG)
    um = make_um(login_max_failures=3)
    secrets_seen: list[str] = [CANARY_PASSWORD, CANARY_NEW, CANARY_RESET, CANARY_WRONG]

    user = um.users.register("canary@example.com", CANARY_PASSWORD).user
    assert user is not None
    verify = extract_token(um.outbox.last(template="verify_email"))
    um.users.verify_email(verify)
    with pytest.raises(InvalidCredentials):
        um.auth.login("canary@example.com", CANARY_WRONG)
    r1 = um.auth.login("canary@example.com", CANARY_PASSWORD)
    r2 = um.auth.refresh(r1.refresh_token)
    with pytest.raises(TokenReused):
        um.auth.refresh(r1.refresh_token)
    with pytest.raises(WrongPassword):
        um.users.change_password(user.id, CANARY_WRONG, CANARY_NEW)
    um.users.change_password(user.id, CANARY_PASSWORD, CANARY_NEW)
    um.users.request_password_reset("canary@example.com")
    reset = extract_token(um.outbox.last(template="password_reset"))
    um.outbox.fail_with = EmailDeliveryError("provider down", transient=True)
    um.users.reset_password(reset, CANARY_RESET)  # its notice fails to send: logged
    um.outbox.fail_with = None
    r3 = um.auth.login("canary@example.com", CANARY_RESET)
    um.auth.logout(user.id, r3.session_id)

    for token in (verify, reset):
        secrets_seen += [token, hash_token(token)]
    for pair in (r1, r2, r3):
        secrets_seen += [
            pair.access_token,
            pair.refresh_token,
            hashlib.sha256(pair.refresh_token.encode()).hexdigest(),
        ]

    logged = "\n".join(f"{r.getMessage()} {r.args!r} {vars(r)!r}" for r in caplog.records)
    audited = repr(auth_audit(um))
    assert any(r.name == "usermgmt.queue" for r in caplog.records)  # the outage was logged
    for secret in secrets_seen:
        assert secret not in logged
        assert secret not in audited
    assert "$argon2" not in logged
    assert "$argon2" not in audited


def test_auth_one_audit_event_per_flow(auth_audit: Any) -> None:
    """SEC-LG-01: each flow writes exactly one event of its type, naming actor and target."""
    um = make_um()
    user = um.users.register("flows@example.com", CANARY_PASSWORD).user
    assert user is not None
    um.users.verify_email(extract_token(um.outbox.last(template="verify_email")))
    pair = um.auth.login("flows@example.com", CANARY_PASSWORD)
    um.auth.refresh(pair.refresh_token)
    um.users.change_password(user.id, CANARY_PASSWORD, CANARY_NEW)
    um.users.request_password_reset("flows@example.com")
    um.users.reset_password(extract_token(um.outbox.last(template="password_reset")), CANARY_RESET)
    pair = um.auth.login("flows@example.com", CANARY_RESET)
    um.auth.logout(user.id, pair.session_id)

    counts: dict[str, int] = {}
    for event in auth_audit(um):
        counts[event.action] = counts.get(event.action, 0) + 1
        assert event.actor_user_id == user.id, event.action
        assert event.occurred_at.tzinfo is not None
    assert counts == {
        "user.registered": 1,
        "user.email_verified": 1,
        "user.login": 2,
        "session.refreshed": 1,
        "user.password_changed": 1,
        "user.password_reset_requested": 1,
        "user.password_reset": 1,
        "user.logout": 1,
    }
