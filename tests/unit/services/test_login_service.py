"""Password login on the in-memory backends (SECURITY.md 1A/1B/1C, section 6 item 2)."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest

from usermgmt.app import UserManagement
from usermgmt.clock import FakeClock
from usermgmt.config import Settings
from usermgmt.errors import (
    BackendUnavailable,
    EmailNotVerified,
    InvalidCredentials,
    InvalidToken,
    OneTimeTokenError,
    PasswordTooLong,
    ValidationError,
)
from usermgmt.ids import new_id
from usermgmt.models import User
from usermgmt.services.auth import PasswordResetRequired
from usermgmt.testing import create_user, extract_token, make_um, random_password


def _oauth_only_user(um: UserManagement, email: str) -> User:
    """A user without a usable password (as an OAuth sign-up creates one)."""
    now = um.clock.now()
    user = User(
        id=new_id(),
        email=email,
        password_hash=None,
        is_verified=True,
        email_verified_at=now,
        created_at=now,
        updated_at=now,
    )
    um.kernel.write(lambda uow: uow.users.add(user))
    return user


def _failure(um: UserManagement, email: str, password: str) -> InvalidCredentials:
    with pytest.raises(InvalidCredentials) as info:
        um.auth.login(email, password)
    return info.value


def _failure_states(um: UserManagement) -> dict[str, tuple[str, str]]:
    """Every login-failure state of SEC-AU-01 as (email, password) to try.

    ``um`` must lock after 3 failures.
    """
    admin, _ = create_user(um, superuser=True)
    wrong, wrong_pw = create_user(um, "wrong@example.com")
    flagged, flagged_pw = create_user(um, "admin-disabled@example.com")
    um.admin.update_user(admin.id, flagged.id, is_active=False)
    gone, gone_pw = create_user(um, "deactivated@example.com")
    um.users.deactivate(gone.id)
    locked, locked_pw = create_user(um, "locked@example.com")
    for _ in range(3):
        _failure(um, locked.email, "not-" + locked_pw)
    _oauth_only_user(um, "oauth-only@example.com")
    return {
        "unknown": ("nobody@example.com", random_password()),
        "wrong_password": (wrong.email, "not-" + wrong_pw),
        "inactive_admin_flag": (flagged.email, flagged_pw),
        "inactive_wrong_password": (flagged.email, "not-" + flagged_pw),
        "deactivated": (gone.email, gone_pw),
        "locked": (locked.email, locked_pw),
        "oauth_only": ("oauth-only@example.com", random_password()),
    }


_REASONS = {
    "unknown": "unknown_user",
    "wrong_password": "wrong_password",
    "inactive_admin_flag": "inactive",
    "inactive_wrong_password": "wrong_password",
    "deactivated": "inactive",
    "locked": "locked",
    "oauth_only": "no_password",
}


def test_login_uniform_response(auth_audit: Any) -> None:
    """SEC-AU-01: unknown, wrong password, inactive, locked and password-less (OAuth-only)
    accounts all fail with the same exception class and the same body."""
    um = make_um(login_max_failures=3)
    states = _failure_states(um)
    errors = {}
    reasons = {}
    for name, creds in states.items():
        errors[name] = _failure(um, *creds)
        reasons[name] = auth_audit(um, "user.login_failed")[-1].metadata["reason"]
    assert reasons == _REASONS  # the states really are different on the inside

    reference = errors["unknown"]
    assert type(reference) is InvalidCredentials
    assert reference.to_dict()["code"] == "invalid_credentials"
    for name, error in errors.items():
        assert type(error) is InvalidCredentials, name
        assert error.to_dict() == reference.to_dict(), name
        assert str(error) == str(reference), name


def test_login_hasher_called_once_per_branch(auth_spy_hasher: Any) -> None:
    """SEC-AU-02 / SEC-RL-03: each failure branch runs exactly one password verification
    (real or dummy) and no hashing; the locked branch runs none (the reservation is refused
    before any verification)."""
    um = make_um(login_max_failures=3)
    states = _failure_states(um)
    spy = auth_spy_hasher(um)
    expected = dict.fromkeys(states, 1) | {"locked": 0}
    seen: dict[str, dict[str, int]] = {}
    for name, creds in states.items():
        spy.reset()
        _failure(um, *creds)
        seen[name] = {"verifications": spy.verifications, "hash": spy.calls["hash"]}
    assert seen == {name: {"verifications": n, "hash": 0} for name, n in expected.items()}

    # The success branch also verifies once (and does not rehash a current hash).
    user, password = create_user(um)
    spy.reset()
    um.auth.login(user.email, password)
    assert (spy.calls["verify"], spy.calls["dummy_verify"], spy.calls["hash"]) == (1, 0, 0)


def test_login_unknown_and_password_less_users_use_dummy_verification(
    um: UserManagement, auth_spy_hasher: Any
) -> None:
    """SEC-AU-02 (Django CVE-2024-39329): the unknown and OAuth-only branches pay the cost
    through dummy_verify, not by skipping the hasher."""
    _oauth_only_user(um, "oauth@example.com")
    spy = auth_spy_hasher(um)
    _failure(um, "ghost@example.com", random_password())
    _failure(um, "oauth@example.com", random_password())
    assert spy.calls == {"dummy_verify": 2}


def test_login_issues_a_new_session_each_time(
    um: UserManagement, make_user: Any, auth_audit: Any
) -> None:
    """SEC-AU-04: every login opens a new refresh-token family with fresh tokens."""
    user, password = make_user()
    first = um.auth.login(user.email, password)
    second = um.auth.login(user.email, password)

    assert first.session_id != second.session_id
    assert first.refresh_token != second.refresh_token
    assert first.access_token != second.access_token
    family = um.kernel.codecs.refresh.decode
    assert family(first.refresh_token, typ="refresh")["sid"] == str(first.session_id)
    assert family(second.refresh_token, typ="refresh")["sid"] == str(second.session_id)
    assert {s.id for s in um.users.list_sessions(user.id)} == {
        first.session_id,
        second.session_id,
    }
    # Both sessions are independent: ending one leaves the other.
    um.auth.logout(user.id, first.session_id)
    assert um.auth.verify_access_token(second.access_token).session_id == second.session_id
    logins = auth_audit(um, "user.login")
    assert [e.target_id for e in logins] == [str(first.session_id), str(second.session_id)]


@pytest.mark.parametrize("how", ["deactivate", "admin_flag"])
def test_login_disabled_user_fails_on_every_path(how: str, um: UserManagement) -> None:
    """SEC-AU-05 / SEC-JW-08: a disabled user cannot log in, refresh, use an access token,
    or finish a password reset started before the account was disabled."""
    admin, _ = create_user(um, superuser=True)
    user, password = create_user(um)
    pair = um.auth.login(user.email, password)
    um.users.request_password_reset(user.email)
    reset_token = extract_token(um.outbox.last(to=user.email, template="password_reset"))

    if how == "deactivate":
        um.users.deactivate(user.id)
    else:
        um.admin.update_user(admin.id, user.id, is_active=False)

    _failure(um, user.email, password)
    with pytest.raises(InvalidToken):
        um.auth.refresh(pair.refresh_token)
    with pytest.raises(InvalidToken):
        um.auth.verify_access_token(pair.access_token)
    with pytest.raises(InvalidToken):
        um.auth.authenticate(pair.access_token)
    with pytest.raises(OneTimeTokenError):
        um.users.reset_password(reset_token, random_password())
    um.users.request_password_reset(user.email)  # silently no mail for a disabled account
    assert len(um.outbox.find(to=user.email, template="password_reset")) == 1


def test_refresh_and_authenticate_check_the_user_row_itself(um: UserManagement) -> None:
    """SEC-AU-05: even if the sessions were not revoked (a row edited behind the service's
    back), refresh and authenticate refuse a user who is no longer active."""
    user, password = create_user(um)
    pair = um.auth.login(user.email, password)

    def disable(uow: Any) -> None:
        uow.users.update(replace(uow.users.get(user.id), is_active=False))

    um.kernel.write(disable)
    with pytest.raises(InvalidToken):
        um.auth.authenticate(pair.access_token)
    with pytest.raises(InvalidToken):
        um.auth.refresh(pair.refresh_token)
    # The refusal revoked the session: re-activating does not bring the tokens back.
    um.kernel.write(lambda uow: uow.users.update(replace(uow.users.get(user.id), is_active=True)))
    with pytest.raises(InvalidToken):
        um.auth.refresh(pair.refresh_token)
    with pytest.raises(InvalidToken):
        um.auth.verify_access_token(pair.access_token)


def test_login_forced_reset_blocks_until_reset(um: UserManagement) -> None:
    """SEC-PW-07: an admin "force reset" flag blocks login, even with the right password,
    with code ``password_reset_required``; a reset clears it. There is no expiry setting."""
    admin, _ = create_user(um, superuser=True)
    user, password = create_user(um)
    pair = um.auth.login(user.email, password)
    um.admin.update_user(admin.id, user.id, must_reset_password=True)

    with pytest.raises(PasswordResetRequired) as info:
        um.auth.login(user.email, password)
    assert info.value.to_dict()["code"] == "password_reset_required"
    # A wrong password still gets the uniform answer, not a hint about the flag.
    assert type(_failure(um, user.email, "not-" + password)) is InvalidCredentials
    # Setting the flag ended the existing sessions (evidence of compromise).
    with pytest.raises(InvalidToken):
        um.auth.refresh(pair.refresh_token)

    um.users.request_password_reset(user.email)
    token = extract_token(um.outbox.last(to=user.email, template="password_reset"))
    new_password = random_password()
    um.users.reset_password(token, new_password)
    assert um.users.get(user.id).must_reset_password is False
    assert um.auth.login(user.email, new_password).access_token

    assert not [name for name in Settings.model_fields if "expir" in name or "max_age" in name]


def test_login_requires_verified_email_only_after_a_correct_password() -> None:
    """REQUIRE_VERIFIED_EMAIL (SEC-AC-08): ``email_not_verified`` is only revealed to a caller
    who knows the password; otherwise the uniform failure."""
    um = make_um(require_verified_email=True)
    user, password = create_user(um, verified=False)

    assert type(_failure(um, user.email, "not-" + password)) is InvalidCredentials
    assert type(_failure(um, "ghost@example.com", password)) is InvalidCredentials
    with pytest.raises(EmailNotVerified) as info:
        um.auth.login(user.email, password)
    assert info.value.to_dict()["code"] == "email_not_verified"
    assert um.users.list_sessions(user.id) == []

    um.users.verify_email(extract_token(um.outbox.last(to=user.email, template="verify_email")))
    assert um.auth.login(user.email, password).session_id


def test_login_verified_email_not_required_by_default(um: UserManagement) -> None:
    """REQUIRE_VERIFIED_EMAIL is off by default: an unverified user may log in."""
    user, password = create_user(um, verified=False)
    assert um.auth.login(user.email, password).session_id


def test_login_huge_password_is_refused_before_hashing(
    um: UserManagement, make_user: Any, auth_spy_hasher: Any
) -> None:
    """SEC-PW-11: a 1 MB password is refused quickly with a validation error on the password
    field, without touching the hasher or the lockout counter."""
    user, password = make_user()
    spy = auth_spy_hasher(um)
    started = time.perf_counter()
    with pytest.raises(ValidationError) as info:
        um.auth.login(user.email, "x" * 1_000_000)
    elapsed = time.perf_counter() - started
    assert elapsed < 0.05
    assert spy.calls == {}
    assert "password" in str(info.value.to_dict())
    # Just over the configured maximum (1024) is PasswordTooLong, also before any hashing.
    with pytest.raises(PasswordTooLong):
        um.auth.login(user.email, "x" * 1025)
    assert spy.calls == {}
    # None of it counted as a failed attempt.
    for _ in range(um.settings.login_max_failures - 1):
        _failure(um, user.email, "not-" + password)
    assert um.auth.login(user.email, password).session_id


def test_login_huge_password_is_password_too_long(um: UserManagement) -> None:
    """SEC-PW-11: the 1 MB password gets the same code as any other over-long password."""
    with pytest.raises(PasswordTooLong):
        um.auth.login("someone@example.com", "x" * 1_000_000)


def test_login_backend_failure_does_not_consume_attempts(um_clock: FakeClock) -> None:
    """F6 / SEC-RL-04: a database outage during login counts no failure and cannot lock the
    account out once the database is back."""
    um = make_um(clock=um_clock, login_max_failures=3)
    user, password = create_user(um)
    healthy = um.kernel.read

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise BackendUnavailable("database down")

    um.kernel.read = broken  # type: ignore[method-assign]
    for _ in range(3):
        with pytest.raises(BackendUnavailable):
            um.auth.login(user.email, password)
    um.kernel.read = healthy  # type: ignore[method-assign]
    um_clock.advance(seconds=um.settings.login_lockout_max_seconds + 1)
    assert um.auth.login(user.email, password).session_id


def test_login_audits_success_failure_and_lock(auth_audit: Any) -> None:
    """SEC-LG-01: one ``user.login`` per success, one ``user.login_failed`` per failure (with
    a reason, never the password) and one ``user.locked`` when the lock engages."""
    um = make_um(login_max_failures=2)
    user, password = create_user(um)
    um.auth.login(user.email, password)
    _failure(um, user.email, "wrong-password-1")
    _failure(um, user.email, "wrong-password-2")
    _failure(um, user.email, password)  # locked

    assert len(auth_audit(um, "user.login")) == 1
    failed = auth_audit(um, "user.login_failed")
    assert [e.metadata["reason"] for e in failed] == ["wrong_password", "wrong_password", "locked"]
    assert all(e.metadata["email"] == user.email.lower() for e in failed)
    locked = auth_audit(um, "user.locked")
    assert [(e.target_id, e.metadata["seconds"]) for e in locked] == [
        (str(user.id), um.settings.login_lockout_seconds)
    ]
    text = repr(auth_audit(um))
    for secret in (password, "wrong-password-1", "wrong-password-2"):
        assert secret not in text
