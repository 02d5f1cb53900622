"""Logout and session revocation (SEC-JW-07, SEC-JW-08, SEC-JW-09; fault F2)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from usermgmt.app import UserManagement
from usermgmt.clock import FakeClock
from usermgmt.errors import (
    BackendUnavailable,
    InvalidToken,
    NotFound,
    TokenExpired,
    TokenRevoked,
)
from usermgmt.models import TokenPair
from usermgmt.testing import create_user


def _revoked(um: UserManagement, pair: TokenPair) -> None:
    with pytest.raises(TokenRevoked):
        um.auth.verify_access_token(pair.access_token)
    with pytest.raises(TokenRevoked):
        um.auth.refresh(pair.refresh_token)


def _alive(um: UserManagement, pair: TokenPair) -> None:
    assert um.auth.verify_access_token(pair.access_token).session_id == pair.session_id


def test_auth_logout_kills_that_session_at_once(
    um: UserManagement, make_user: Any, auth_audit: Any
) -> None:
    """SEC-JW-07: logout makes the session's access token fail immediately (TokenRevoked, no
    waiting for its expiry) and its refresh token too; other sessions live on."""
    user, password = make_user()
    pair = um.auth.login(user.email, password)
    other = um.auth.login(user.email, password)
    _alive(um, pair)  # verified (and remembered) before the logout

    um.auth.logout(user.id, pair.session_id)

    _revoked(um, pair)
    with pytest.raises(InvalidToken):
        um.auth.authenticate(pair.access_token)
    _alive(um, other)
    assert [s.id for s in um.users.list_sessions(user.id)] == [other.session_id]
    assert [e.target_id for e in auth_audit(um, "user.logout")] == [str(pair.session_id)]


def test_auth_logout_all_kills_every_session(
    um: UserManagement, make_user: Any, auth_audit: Any
) -> None:
    """SEC-JW-07 / SEC-JW-09: logout_all ends every session of the user, only that user's."""
    user, password = make_user()
    bystander, bystander_password = make_user()
    pairs = [um.auth.login(user.email, password) for _ in range(3)]
    theirs = um.auth.login(bystander.email, bystander_password)

    assert um.auth.logout_all(user.id) == 3

    for pair in pairs:
        _revoked(um, pair)
    _alive(um, theirs)
    assert um.users.list_sessions(user.id) == []
    assert auth_audit(um, "user.logout_all")[0].metadata["sessions"] == 3
    assert um.auth.logout_all(user.id) == 0  # nothing left to end


@pytest.mark.parametrize("how", ["deactivate", "admin_is_active_false", "admin_delete"])
def test_auth_disabling_user_kills_every_session(how: str, um: UserManagement) -> None:
    """SEC-JW-08: deactivation (self, admin flag, admin delete) ends all sessions at once."""
    admin, admin_password = create_user(um, superuser=True)
    user, password = create_user(um)
    pairs = [um.auth.login(user.email, password) for _ in range(2)]
    admin_pair = um.auth.login(admin.email, admin_password)

    if how == "deactivate":
        um.users.deactivate(user.id)
    elif how == "admin_is_active_false":
        um.admin.update_user(admin.id, user.id, is_active=False)
    else:
        um.admin.delete_user(admin.id, user.id)

    for pair in pairs:
        _revoked(um, pair)
        with pytest.raises(InvalidToken):
            um.auth.authenticate(pair.access_token)
    _alive(um, admin_pair)


def _b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_auth_altered_copies_of_a_revoked_token_are_rejected(
    um: UserManagement, make_user: Any
) -> None:
    """SEC-JW-07: revocation is by session, not by the token's text: a re-encoded token
    (same claims, new signature/jti), padded, whitespace-altered or otherwise mangled copy
    of a revoked access token never passes."""
    user, password = make_user()
    pair = um.auth.login(user.email, password)
    codec = um.kernel.codecs.access
    claims = codec.decode(pair.access_token, typ="access")
    reencoded = codec.encode({**claims, "jti": "another-jti-0001"})
    reordered = codec.encode(dict(reversed(list(claims.items()))))
    assert len({pair.access_token, reencoded, reordered}) == 3
    _alive(um, pair)
    assert um.auth.verify_access_token(reencoded).session_id == pair.session_id

    um.auth.logout(user.id, pair.session_id)

    header, payload, signature = pair.access_token.split(".")
    variants = {
        "original": pair.access_token,
        "re-encoded": reencoded,
        "re-ordered": reordered,
        "trailing space": pair.access_token + " ",
        "leading space": " " + pair.access_token,
        "trailing newline": pair.access_token + "\n",
        "inner whitespace": f"{header}. {payload}.{signature}",
        "padded signature": f"{header}.{payload}.{signature}==",
        "padded payload": f"{header}.{payload}=.{signature}",
        "bearer prefix": "Bearer " + pair.access_token,
        "unsigned": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.",
    }
    accepted = []
    for name, variant in variants.items():
        try:
            um.auth.verify_access_token(variant)
        except InvalidToken:
            continue
        accepted.append(name)
    assert accepted == []
    with pytest.raises(TokenRevoked):
        um.auth.verify_access_token(reencoded)


def test_auth_revocation_store_down_falls_back_to_database(
    um: UserManagement, make_user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """F2: when the fast revocation store is unavailable the check falls back to the
    database: a revoked token is still rejected (fail closed), a valid one still accepted."""
    user, password = make_user()
    revoked = um.auth.login(user.email, password)
    valid = um.auth.login(user.email, password)
    _alive(um, revoked)
    um.auth.logout(user.id, revoked.session_id)

    calls: list[Any] = []

    def unavailable(session_id: Any) -> bool:
        calls.append(session_id)
        raise BackendUnavailable("revocation store down")

    monkeypatch.setattr(um.kernel.revocations, "is_revoked", unavailable)

    with pytest.raises(TokenRevoked):
        um.auth.verify_access_token(revoked.access_token)
    _alive(um, valid)
    assert calls == [revoked.session_id, valid.session_id]  # the store really was asked


def test_auth_revocation_store_push_failure_still_revokes(
    um: UserManagement, make_user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """F2: if telling the revocation store fails at logout, the refresh token is still dead
    (the database is the source of truth) and the error does not escape the logout."""
    user, password = make_user()
    pair = um.auth.login(user.email, password)

    def unavailable(*args: Any, **kwargs: Any) -> None:
        raise BackendUnavailable("revocation store down")

    monkeypatch.setattr(um.kernel.revocations, "revoke", unavailable)
    um.auth.logout(user.id, pair.session_id)
    with pytest.raises(TokenRevoked):
        um.auth.refresh(pair.refresh_token)


def test_auth_database_only_revocation(um: UserManagement, um_clock: FakeClock) -> None:
    """F2 / SEC-JW-07: a process without a fast revocation store (several processes, no
    Redis) sees another process's logout through the database."""
    user, password = create_user(um)
    pair = um.auth.login(user.email, password)
    other = UserManagement(um.settings, backends=um.with_backends(revocations=None), clock=um_clock)
    _alive(other, pair)
    um.auth.logout(user.id, pair.session_id)
    with pytest.raises(TokenRevoked):
        other.auth.verify_access_token(pair.access_token)


def test_auth_logout_of_someone_elses_session_is_not_found(
    um: UserManagement, make_user: Any
) -> None:
    """SEC-AC-02: a user cannot end another user's session by id."""
    alice, alice_password = make_user()
    mallory, _ = make_user()
    pair = um.auth.login(alice.email, alice_password)
    with pytest.raises(NotFound):
        um.auth.logout(mallory.id, pair.session_id)
    _alive(um, pair)


def test_auth_access_token_expires(um: UserManagement, um_clock: FakeClock, make_user: Any) -> None:
    """SEC-JW-03 / SEC-JW-11: an access token stops working after its TTL (+ leeway), even
    one verified before."""
    user, password = make_user()
    pair = um.auth.login(user.email, password)
    _alive(um, pair)
    um_clock.advance(seconds=um.settings.access_token_ttl_seconds - 1)
    _alive(um, pair)
    um_clock.advance(seconds=um.settings.jwt_leeway_seconds + 2)
    with pytest.raises(TokenExpired):
        um.auth.verify_access_token(pair.access_token)
