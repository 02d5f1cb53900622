"""Password-reset and email-verification tokens (SEC-TK-01..10, race R7; section 6 item 4)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import replace
from typing import Any

import pytest

from usermgmt.app import UserManagement
from usermgmt.clock import FakeClock
from usermgmt.errors import (
    InvalidCredentials,
    InvalidToken,
    OneTimeTokenError,
    TokenRevoked,
    ValidationError,
)
from usermgmt.models import TokenPurpose
from usermgmt.security.opaque import hash_token
from usermgmt.testing import create_user, extract_token, make_um, random_password

ITERATIONS = 20


def _reset_token(um: UserManagement, email: str) -> str:
    um.users.request_password_reset(email)
    message = um.outbox.last(to=email, template="password_reset")
    assert message is not None
    return extract_token(message)


def _verify_token(um: UserManagement, email: str) -> str:
    message = um.outbox.last(to=email, template="verify_email")
    assert message is not None
    return extract_token(message)


def _stored(um: UserManagement, purpose: TokenPurpose, token: str) -> Any:
    return um.kernel.read(lambda uow: uow.tokens.find(purpose, hash_token(token)))


# --- single use ---------------------------------------------------------------------------


def test_reset_token_single_use(um: UserManagement, make_user: Any, auth_audit: Any) -> None:
    """SEC-TK-03: a reset token works once; the second use fails and changes nothing."""
    user, _ = make_user()
    token = _reset_token(um, user.email)
    first, second = random_password(), random_password()

    assert um.users.reset_password(token, first) is None
    with pytest.raises(OneTimeTokenError):
        um.users.reset_password(token, second)

    assert um.auth.login(user.email, first).session_id
    with pytest.raises(InvalidCredentials):
        um.auth.login(user.email, second)
    assert len(auth_audit(um, "user.password_reset")) == 1


def test_verify_token_single_use(um: UserManagement, auth_audit: Any) -> None:
    """SEC-TK-03: a verification token works once."""
    user, _ = create_user(um, verified=False)
    token = _verify_token(um, user.email)
    assert um.users.get(user.id).is_verified is False

    verified = um.users.verify_email(token)
    assert verified.is_verified is True
    assert um.users.get(user.id).email_verified_at == um.clock.now()
    with pytest.raises(OneTimeTokenError):
        um.users.verify_email(token)
    assert len(auth_audit(um, "user.email_verified")) == 1


# --- expiry ---------------------------------------------------------------------------------


@pytest.mark.parametrize("ttl", [None, 600])
def test_reset_token_expiry(ttl: int | None, um_clock: FakeClock) -> None:
    """SEC-TK-04: a reset token expires after PASSWORD_RESET_TTL_SECONDS (default 1 h)."""
    um = make_um(clock=um_clock, **({} if ttl is None else {"password_reset_ttl_seconds": ttl}))
    lifetime = ttl or 3600
    assert um.settings.password_reset_ttl_seconds == lifetime
    user, _ = create_user(um)

    token = _reset_token(um, user.email)
    um_clock.advance(seconds=lifetime - 1)
    assert um.users.reset_password(token, random_password()) is None

    token = _reset_token(um, user.email)
    um_clock.advance(seconds=lifetime)
    with pytest.raises(OneTimeTokenError):
        um.users.reset_password(token, random_password())


def test_verify_token_expiry(um_clock: FakeClock) -> None:
    """SEC-TK-04: a verification token expires after 24 h by default."""
    um = make_um(clock=um_clock)
    on_time, _ = create_user(um, verified=False)
    late, _ = create_user(um, verified=False)
    um_clock.advance(seconds=86400 - 1)
    assert um.users.verify_email(_verify_token(um, on_time.email)).is_verified
    um_clock.advance(seconds=1)
    with pytest.raises(OneTimeTokenError):
        um.users.verify_email(_verify_token(um, late.email))
    assert um.users.get(late.id).is_verified is False


# --- purpose binding ------------------------------------------------------------------------


def test_reset_token_purpose_binding(um: UserManagement) -> None:
    """SEC-TK-05: a reset token cannot verify an email address, nor act as a refresh or access
    token; the misuse does not burn it."""
    user, _ = create_user(um, verified=False)
    token = _reset_token(um, user.email)

    with pytest.raises(OneTimeTokenError):
        um.users.verify_email(token)
    with pytest.raises(InvalidToken):
        um.auth.refresh(token)
    with pytest.raises(InvalidToken):
        um.auth.verify_access_token(token)
    assert um.users.get(user.id).is_verified is False
    assert um.users.reset_password(token, random_password()) is None


def test_verify_token_purpose_binding(um: UserManagement) -> None:
    """SEC-TK-05: a verification token cannot reset a password; the misuse does not burn it."""
    user, password = create_user(um, verified=False)
    token = _verify_token(um, user.email)

    with pytest.raises(OneTimeTokenError):
        um.users.reset_password(token, random_password())
    assert um.auth.login(user.email, password).session_id  # password unchanged
    assert um.users.verify_email(token).is_verified


def test_tokens_access_and_refresh_tokens_are_not_one_time_tokens(
    um: UserManagement, make_user: Any
) -> None:
    """SEC-TK-05: session tokens are refused by the reset and verify flows."""
    user, password = make_user()
    pair = um.auth.login(user.email, password)
    for token in (pair.access_token, pair.refresh_token):
        with pytest.raises(OneTimeTokenError):
            um.users.reset_password(token, random_password())
        with pytest.raises(OneTimeTokenError):
            um.users.verify_email(token)


def test_verify_token_is_bound_to_the_address_it_was_sent_to(um: UserManagement) -> None:
    """SEC-TK-05: a verification link for the old address does not verify a changed one."""
    user, _ = create_user(um, verified=False)
    token = _verify_token(um, user.email)

    def change_email(uow: Any) -> None:
        uow.users.update(replace(uow.users.get(user.id), email="changed@example.com"))

    um.kernel.write(change_email)
    with pytest.raises(OneTimeTokenError):
        um.users.verify_email(token)
    assert um.users.get(user.id).is_verified is False


# --- hashed at rest -------------------------------------------------------------------------


def test_reset_token_hashed_at_rest(um: UserManagement, make_user: Any) -> None:
    """SEC-TK-02: only SHA-256(token) is stored; the lookup is by hash; the raw token is
    nowhere in the store (tokens, indexes, audit rows)."""
    user, _ = make_user()
    token = _reset_token(um, user.email)
    _assert_hashed_at_rest(um, TokenPurpose.PASSWORD_RESET, token)


def test_verify_token_hashed_at_rest(um: UserManagement) -> None:
    """SEC-TK-02: as for reset tokens."""
    user, _ = create_user(um, verified=False)
    _assert_hashed_at_rest(um, TokenPurpose.EMAIL_VERIFICATION, _verify_token(um, user.email))


def _assert_hashed_at_rest(um: UserManagement, purpose: TokenPurpose, token: str) -> None:
    store = um.backends.uow.store  # type: ignore[attr-defined]
    stored = _stored(um, purpose, token)
    assert stored is not None
    assert stored.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in repr(store.tokens)
    assert token not in repr(store.token_index)
    assert token not in repr(store.audit)
    assert token not in repr(vars(store))
    assert stored.token_hash not in repr(store.audit)


def test_tokens_refresh_tokens_hashed_at_rest(um: UserManagement, make_user: Any) -> None:
    """SEC-TK-02 / SEC-JW-10: sessions keep only the SHA-256 of the refresh token."""
    user, password = make_user()
    pair = um.auth.login(user.email, password)
    store = um.backends.uow.store  # type: ignore[attr-defined]
    assert pair.refresh_token not in repr(vars(store))
    assert pair.access_token not in repr(vars(store))
    digest = hashlib.sha256(pair.refresh_token.encode()).hexdigest()
    assert store.sessions[pair.session_id].token_hash == digest


# --- concurrent use (R7) --------------------------------------------------------------------


def test_reset_token_concurrent_use(um: UserManagement, auth_concurrently: Any) -> None:
    """R7 / SEC-TK-03: 20 threads reset with one token and 20 different passwords → exactly
    one succeeds and the stored password is that request's."""
    for _ in range(ITERATIONS):
        user, _ = create_user(um)
        token = _reset_token(um, user.email)
        passwords = [random_password() for _ in range(20)]

        results = auth_concurrently(
            20, lambda i, t=token, pws=passwords: um.users.reset_password(t, pws[i])
        )

        winners = [i for i, (ok, _) in enumerate(results) if ok]
        assert len(winners) == 1
        assert all(isinstance(err, OneTimeTokenError) for ok, err in results if not ok)
        stored = str(um.users.get(user.id).password_hash)
        matching = [i for i, pw in enumerate(passwords) if um.hasher.verify(pw, stored)]
        assert matching == winners


def test_verify_token_concurrent_use(
    um: UserManagement, auth_concurrently: Any, auth_audit: Any
) -> None:
    """SEC-TK-03: 20 threads verify with one token → exactly one success, one audit event."""
    for iteration in range(ITERATIONS):
        user, _ = create_user(um, verified=False)
        token = _verify_token(um, user.email)

        results = auth_concurrently(20, lambda _i, t=token: um.users.verify_email(t))

        assert [ok for ok, _ in results].count(True) == 1
        assert all(isinstance(err, OneTimeTokenError) for ok, err in results if not ok)
        assert len(auth_audit(um, "user.email_verified")) == iteration + 1


# --- invalidation (TK-06) and no side effects (TK-07) ----------------------------------------


def test_reset_token_new_request_invalidates_older_tokens(
    um: UserManagement, make_user: Any
) -> None:
    """SEC-TK-06: a newer reset token kills the older one; using it kills itself too."""
    user, _ = make_user()
    older = _reset_token(um, user.email)
    newer = _reset_token(um, user.email)
    assert older != newer

    with pytest.raises(OneTimeTokenError):
        um.users.reset_password(older, random_password())
    assert um.users.reset_password(newer, random_password()) is None
    with pytest.raises(OneTimeTokenError):
        um.users.reset_password(newer, random_password())


def test_reset_token_dies_with_a_password_change(um: UserManagement, make_user: Any) -> None:
    """SEC-TK-06: changing the password invalidates outstanding reset tokens."""
    user, password = make_user()
    token = _reset_token(um, user.email)
    um.users.change_password(user.id, password, random_password())
    with pytest.raises(OneTimeTokenError):
        um.users.reset_password(token, random_password())


def test_reset_token_reset_revokes_sessions(
    um: UserManagement, make_user: Any, auth_audit: Any
) -> None:
    """SEC-TK-06 / SEC-AU-06: a reset ends every session (old refresh and access tokens fail)
    and returns no tokens; the user signs in afterwards."""
    user, password = make_user()
    pairs = [um.auth.login(user.email, password) for _ in range(2)]
    token = _reset_token(um, user.email)

    assert um.users.reset_password(token, random_password()) is None

    for pair in pairs:
        with pytest.raises(TokenRevoked):
            um.auth.refresh(pair.refresh_token)
        with pytest.raises(TokenRevoked):
            um.auth.verify_access_token(pair.access_token)
    assert auth_audit(um, "user.password_reset")[0].metadata["sessions_revoked"] == 2
    assert um.outbox.last(to=user.email, template="password_changed") is not None


def test_reset_token_request_changes_nothing(um: UserManagement, make_user: Any) -> None:
    """SEC-TK-07: asking for a reset link changes nothing on the account: same row, the old
    password still works, existing sessions live on."""
    user, password = make_user()
    pair = um.auth.login(user.email, password)
    before = um.users.get(user.id)

    um.users.request_password_reset(user.email)

    assert um.users.get(user.id) == before
    assert um.auth.refresh(pair.refresh_token).session_id == pair.session_id
    assert um.auth.login(user.email, password).session_id


def test_reset_token_unused_link_expires_harmlessly(
    um: UserManagement, um_clock: FakeClock, make_user: Any
) -> None:
    """SEC-TK-07: an ignored reset link leaves the account as it was, even after expiry."""
    user, password = make_user()
    _reset_token(um, user.email)
    um_clock.advance(seconds=um.settings.password_reset_ttl_seconds + 1)
    assert um.auth.login(user.email, password).session_id


# --- links, generation, header injection ------------------------------------------------------


def test_tokens_links_use_the_configured_app_url() -> None:
    """SEC-TK-08: email links are built from APP_URL (never from a request's Host)."""
    um = make_um(app_url="https://app.example/base/")
    user, _ = create_user(um, verified=False)
    um.users.request_password_reset(user.email)
    um.users.register(user.email, random_password())  # existing account notice

    verify = um.outbox.last(to=user.email, template="verify_email")
    reset = um.outbox.last(to=user.email, template="password_reset")
    notice = um.outbox.last(to=user.email, template="existing_account")
    assert "https://app.example/base/verify-email?token=" in verify.text
    assert "https://app.example/base/reset-password?token=" in reset.text
    assert "https://app.example/base/reset-password" in notice.text
    for message in (verify, reset, notice):
        assert "localhost" not in message.text
        assert "localhost" not in (message.html or "")


def test_tokens_come_from_secrets_token_urlsafe(
    um: UserManagement, make_user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SEC-TK-01: tokens are ``secrets.token_urlsafe(32)`` (256 bits), not UUIDs."""
    issued: list[tuple[int | None, str]] = []
    real = secrets.token_urlsafe

    def spy(nbytes: int | None = None) -> str:
        value = real(nbytes)
        issued.append((nbytes, value))
        return value

    monkeypatch.setattr("usermgmt.security.opaque.secrets.token_urlsafe", spy)
    user, _ = make_user()
    token = _reset_token(um, user.email)
    fresh, _ = create_user(um, verified=False)
    verify = _verify_token(um, fresh.email)

    for value in (token, verify):
        assert (32, value) in issued
        assert len(value) == 43  # 32 bytes, urlsafe base64 without padding


def test_tokens_reject_header_injection() -> None:
    """SEC-TK-10: addresses and names with CR/LF never reach a mail header."""
    um = make_um()
    for email in ("a@b.com\r\nBcc: x@y", "a@b.com\nBcc: x@y.com", "a@b.com\rX: y"):
        with pytest.raises(ValidationError):
            um.users.register(email, random_password())
        with pytest.raises(ValidationError):
            um.users.request_password_reset(email)
    with pytest.raises(ValidationError):
        um.users.register("ok@example.com", random_password(), name="Eve\r\nBcc: x@y.com")
    assert um.kernel.read(lambda uow: uow.users.count()) == 0
    assert len(um.outbox) == 0


def test_tokens_malformed_tokens_are_rejected_without_lookup(um: UserManagement) -> None:
    """SEC-TK-02: garbage tokens are shape-checked and refused with the generic error."""
    for garbage in ("short", "x" * 300, "has space in it 123456", "../../etc/passwd-aaaaaaa"):
        with pytest.raises(OneTimeTokenError):
            um.users.reset_password(garbage, random_password())
        with pytest.raises(OneTimeTokenError):
            um.users.verify_email(garbage)
