"""Refresh-token rotation, reuse detection, lifetimes and races
(SEC-JW-10/11/12, races R3, R4, R9; section 6 item 6)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from usermgmt.app import UserManagement
from usermgmt.clock import FakeClock
from usermgmt.errors import (
    InvalidToken,
    TokenExpired,
    TokenReused,
    TokenRevoked,
    ValidationError,
)
from usermgmt.models import TokenPair
from usermgmt.testing import create_user, make_um, random_password

ITERATIONS = 20


def _session(um: UserManagement, session_id: Any) -> Any:
    return um.kernel.read(lambda uow: uow.sessions.get(session_id))


def _dead(um: UserManagement, pair: TokenPair) -> None:
    """Neither token of ``pair`` works any more."""
    with pytest.raises(InvalidToken):
        um.auth.refresh(pair.refresh_token)
    with pytest.raises(InvalidToken):
        um.auth.verify_access_token(pair.access_token)


def test_refresh_rotation(um: UserManagement, make_user: Any, auth_audit: Any) -> None:
    """SEC-JW-10: every refresh returns a new pair in the same family; the session row keeps
    only the SHA-256 of the current refresh token and counts generations."""
    user, password = make_user()
    first = um.auth.login(user.email, password)
    second = um.auth.refresh(first.refresh_token)

    assert second.session_id == first.session_id
    assert second.refresh_token != first.refresh_token
    assert second.access_token != first.access_token
    session = _session(um, first.session_id)
    assert session.generation == 2
    assert session.token_hash == hashlib.sha256(second.refresh_token.encode()).hexdigest()
    assert um.auth.verify_access_token(second.access_token).user_id == user.id
    third = um.auth.refresh(second.refresh_token)
    assert _session(um, first.session_id).generation == 3
    assert [e.metadata["generation"] for e in auth_audit(um, "session.refreshed")] == [2, 3]
    assert um.auth.verify_access_token(third.access_token).session_id == first.session_id


def test_refresh_reuse_revokes_family(um: UserManagement, make_user: Any, auth_audit: Any) -> None:
    """SEC-JW-10: R1 → R2; presenting R1 again fails with TokenReused, revokes the whole
    family (R2 and every access token of the session die) and writes one audit event."""
    user, password = make_user()
    r1 = um.auth.login(user.email, password)
    r2 = um.auth.refresh(r1.refresh_token)
    other = um.auth.login(user.email, password)  # another session of the same user

    with pytest.raises(TokenReused):
        um.auth.refresh(r1.refresh_token)

    with pytest.raises(TokenRevoked):
        um.auth.refresh(r2.refresh_token)
    for access in (r1.access_token, r2.access_token):
        with pytest.raises(TokenRevoked):
            um.auth.verify_access_token(access)
    assert _session(um, r1.session_id).revoked_reason == "reuse"
    events = auth_audit(um, "session.refresh_token_reuse_detected")
    assert [(e.target_id, e.actor_user_id) for e in events] == [(str(r1.session_id), user.id)]
    # Only that family: the user's other session is untouched.
    assert um.auth.refresh(other.refresh_token).session_id == other.session_id


def test_refresh_concurrent_single_winner(
    um: UserManagement, make_user: Any, auth_concurrently: Any, auth_audit: Any
) -> None:
    """R3: 20 threads refresh the same token at once → exactly one new pair. The losers are
    treated as reuse (team decision: strict, no grace window), so the family ends and is
    audited once per race."""
    user, password = make_user()
    for iteration in range(ITERATIONS):
        pair = um.auth.login(user.email, password)
        results = auth_concurrently(20, lambda _i, token=pair.refresh_token: um.auth.refresh(token))

        winners = [value for ok, value in results if ok]
        losers = [value for ok, value in results if not ok]
        assert len(winners) == 1
        assert isinstance(winners[0], TokenPair)
        assert all(isinstance(err, TokenReused | TokenRevoked) for err in losers), losers
        assert len(auth_audit(um, "session.refresh_token_reuse_detected")) == iteration + 1
        _dead(um, winners[0])


def test_refresh_absolute_expiry(um_clock: FakeClock) -> None:
    """SEC-JW-11: the family has an absolute lifetime; refreshing inside the idle window
    does not extend it."""
    um = make_um(clock=um_clock, refresh_token_ttl_seconds=3600, refresh_token_idle_ttl_seconds=600)
    user, password = create_user(um)
    pair = um.auth.login(user.email, password)
    for _ in range(7):  # t = 500 ... 3500: always inside the idle window
        um_clock.advance(seconds=500)
        pair = um.auth.refresh(pair.refresh_token)
    um_clock.advance(seconds=101)  # t = 3601: 1 s past the absolute limit
    with pytest.raises(TokenExpired):
        um.auth.refresh(pair.refresh_token)


def test_refresh_idle_timeout(um_clock: FakeClock) -> None:
    """SEC-JW-11: a family unused for longer than the idle timeout is over; the idle refusal
    also ends the session's access tokens."""
    um = make_um(clock=um_clock, refresh_token_idle_ttl_seconds=600)
    user, password = create_user(um)
    active = um.auth.login(user.email, password)
    idle = um.auth.login(user.email, password)
    um_clock.advance(seconds=590)
    active = um.auth.refresh(active.refresh_token)
    um_clock.advance(seconds=20)  # idle: 610 s since its last use; active: 20 s

    with pytest.raises(TokenExpired):
        um.auth.refresh(idle.refresh_token)
    with pytest.raises(TokenRevoked):
        um.auth.verify_access_token(idle.access_token)
    assert um.auth.refresh(active.refresh_token).session_id == active.session_id


def test_refresh_survives_restart(um: UserManagement, um_clock: FakeClock) -> None:
    """SEC-JW-12 (Keycloak CVE-2026-9802): rotation state lives in the database; a new
    process sharing it still rejects the rotated token and revokes the family."""
    user, password = create_user(um)
    r1 = um.auth.login(user.email, password)
    r2 = um.auth.refresh(r1.refresh_token)

    restarted = UserManagement(um.settings, backends=um.backends, clock=um_clock)
    with pytest.raises(TokenReused):
        restarted.auth.refresh(r1.refresh_token)
    with pytest.raises(TokenRevoked):
        restarted.auth.refresh(r2.refresh_token)
    with pytest.raises(TokenRevoked):
        um.auth.verify_access_token(r2.access_token)


def test_refresh_survives_restart_without_revocation_cache(
    um: UserManagement, um_clock: FakeClock
) -> None:
    """SEC-JW-12: the same holds for a process with no fast revocation store at all (only the
    database), including for the access tokens of the revoked family."""
    user, password = create_user(um)
    r1 = um.auth.login(user.email, password)
    r2 = um.auth.refresh(r1.refresh_token)

    restarted = UserManagement(
        um.settings, backends=um.with_backends(revocations=None), clock=um_clock
    )
    assert restarted.auth.verify_access_token(r2.access_token).session_id == r1.session_id
    with pytest.raises(TokenReused):
        restarted.auth.refresh(r1.refresh_token)
    with pytest.raises(TokenRevoked):
        restarted.auth.verify_access_token(r2.access_token)


def test_refresh_same_second_rotations(um: UserManagement, make_user: Any) -> None:
    """SEC-JW-12 (Keycloak #50999): two rotations within the same second (the fake clock does
    not move) leave the older tokens rejected; generations, not ``iat``, order them."""
    user, password = make_user()
    r1 = um.auth.login(user.email, password)
    r2 = um.auth.refresh(r1.refresh_token)
    r3 = um.auth.refresh(r2.refresh_token)
    decode = um.kernel.codecs.refresh.decode
    iats = {decode(t.refresh_token, typ="refresh")["iat"] for t in (r1, r2, r3)}
    assert len(iats) == 1  # really the same second
    assert len({r1.refresh_token, r2.refresh_token, r3.refresh_token}) == 3

    with pytest.raises(TokenReused):
        um.auth.refresh(r2.refresh_token)
    with pytest.raises(TokenRevoked):
        um.auth.refresh(r3.refresh_token)


def test_refresh_tokens_are_not_interchangeable(um: UserManagement, make_user: Any) -> None:
    """SEC-JW-05: an access token is not a refresh token and vice versa."""
    user, password = make_user()
    pair = um.auth.login(user.email, password)
    with pytest.raises(InvalidToken):
        um.auth.refresh(pair.access_token)
    with pytest.raises(InvalidToken):
        um.auth.verify_access_token(pair.refresh_token)
    assert um.auth.refresh(pair.refresh_token).session_id == pair.session_id


def test_refresh_vs_logout_race(um: UserManagement, auth_concurrently: Any) -> None:
    """R4 (Keycloak #51312): a refresh racing a logout of the same session never leaves a
    usable token once the logout has returned, whichever commits first."""
    user, password = create_user(um)
    for _ in range(25):
        pair = um.auth.login(user.email, password)

        def step(i: int, pair: TokenPair = pair) -> Any:
            if i == 0:
                return um.auth.refresh(pair.refresh_token)
            return um.auth.logout(user.id, pair.session_id)

        (refresh_ok, refreshed), (logout_ok, logout_error) = auth_concurrently(2, step)
        assert logout_ok, logout_error
        _dead(um, pair)
        if refresh_ok:
            _dead(um, refreshed)
        else:
            assert isinstance(refreshed, TokenRevoked)


def test_refresh_vs_password_change_race(um: UserManagement, auth_concurrently: Any) -> None:
    """R9: a password change racing a refresh: afterwards no token minted before the change
    (nor by the racing refresh) is usable."""
    for _ in range(ITERATIONS):
        user, password = create_user(um)
        pair = um.auth.login(user.email, password)
        new_password = random_password()

        def step(
            i: int,
            pair: TokenPair = pair,
            user_id: Any = user.id,
            old: str = password,
            new: str = new_password,
        ) -> Any:
            if i == 0:
                return um.auth.refresh(pair.refresh_token)
            return um.users.change_password(user_id, old, new)

        (refresh_ok, refreshed), (change_ok, change_error) = auth_concurrently(2, step)
        assert change_ok, change_error
        _dead(um, pair)
        if refresh_ok:
            _dead(um, refreshed)
        else:
            assert isinstance(refreshed, TokenRevoked)
        assert um.auth.login(user.email, new_password).session_id


def test_refresh_password_change_keeps_the_current_session(
    um: UserManagement, make_user: Any
) -> None:
    """R9 / SEC-JW-09: "log out other sessions" on password change: the session named by
    ``keep_session_id`` survives, every other one ends."""
    user, password = make_user()
    current = um.auth.login(user.email, password)
    other = um.auth.login(user.email, password)
    um.users.change_password(
        user.id, password, random_password(), keep_session_id=current.session_id
    )
    _dead(um, other)
    assert um.auth.refresh(current.refresh_token).session_id == current.session_id


def test_refresh_garbage_is_rejected_cleanly(um: UserManagement) -> None:
    """A malformed refresh token is InvalidToken (empty input: ValidationError), never an
    unexpected exception."""
    for garbage in ("x" * 40, "a.b.c", "\x00" * 10, "eyJhbGciOiJub25lIn0.e30."):
        with pytest.raises(InvalidToken):
            um.auth.refresh(garbage)
    with pytest.raises(ValidationError):
        um.auth.refresh("")
