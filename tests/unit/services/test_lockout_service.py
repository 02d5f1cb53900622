"""Per-account login lockout (SEC-RL-01, 03, 04, 05, 06; race R8 / CVE-2024-4629)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from usermgmt.app import UserManagement
from usermgmt.clock import FakeClock
from usermgmt.config import Settings
from usermgmt.errors import InvalidCredentials, RateLimited
from usermgmt.models import RequestContext
from usermgmt.security.limits import BuiltinLimits, Limit
from usermgmt.testing import create_user, extract_token, make_um, random_password

CONCURRENT_ITERATIONS = 20


def _wrong(um: UserManagement, email: str, times: int = 1) -> None:
    for i in range(times):
        with pytest.raises(InvalidCredentials):
            um.auth.login(email, f"wrong-password-{i}-{random_password()}")


def _refused(um: UserManagement, email: str, password: str) -> None:
    with pytest.raises(InvalidCredentials):
        um.auth.login(email, password)


def test_lockout_threshold(auth_audit: Any) -> None:
    """SEC-RL-01: with threshold 5, five wrong passwords lock the account and the correct
    password then gets the generic failure."""
    um = make_um(login_max_failures=5)
    user, password = create_user(um)
    _wrong(um, user.email, 5)
    _refused(um, user.email, password)
    assert um.users.list_sessions(user.id) == []
    assert len(auth_audit(um, "user.locked")) == 1


def test_lockout_counts_consecutive_failures_only() -> None:
    """SEC-RL-01: a success resets the counter, so 4 + 4 failures around it do not lock."""
    um = make_um(login_max_failures=5)
    user, password = create_user(um)
    _wrong(um, user.email, 4)
    assert um.auth.login(user.email, password).session_id
    _wrong(um, user.email, 4)
    assert um.auth.login(user.email, password).session_id


def test_lockout_expiry_fake_clock(um_clock: FakeClock, auth_audit: Any) -> None:
    """SEC-RL-01 / SEC-RL-04 / SEC-RL-06: the lock is temporary (60 s); attempts during the
    lock do not extend it; the next lock lasts 120 s (exponential backoff)."""
    um = make_um(clock=um_clock, login_max_failures=5, login_lockout_seconds=60)
    user, password = create_user(um)

    _wrong(um, user.email, 5)
    um_clock.advance(seconds=30)
    _refused(um, user.email, password)
    _wrong(um, user.email, 3)  # hammering during the lock...
    um_clock.advance(seconds=29)
    _refused(um, user.email, password)
    um_clock.advance(seconds=2)  # ...does not move the end of the lock (t0 + 60 s)
    _wrong(um, user.email)
    assert auth_audit(um, "user.login_failed")[-1].metadata["reason"] == "wrong_password"
    # Locked again (the backoff level is kept until a success): 120 s this time.
    _wrong(um, user.email, 4)
    um_clock.advance(seconds=61)
    _refused(um, user.email, password)
    um_clock.advance(seconds=60)
    assert um.auth.login(user.email, password).session_id
    assert [e.metadata["seconds"] for e in auth_audit(um, "user.locked")] == [60, 120]


def test_lockout_expired_lock_lets_the_owner_in(um_clock: FakeClock) -> None:
    """SEC-RL-01: after the fake clock passes the lock window, the correct password works."""
    um = make_um(clock=um_clock, login_max_failures=5)
    user, password = create_user(um)
    _wrong(um, user.email, 5)
    um_clock.advance(seconds=59)
    _refused(um, user.email, password)
    um_clock.advance(seconds=2)
    assert um.auth.login(user.email, password).session_id


def test_lockout_backoff_is_capped(um_clock: FakeClock, auth_audit: Any) -> None:
    """SEC-RL-04: the backoff doubles up to LOGIN_LOCKOUT_MAX_SECONDS, never beyond."""
    um = make_um(
        clock=um_clock,
        login_max_failures=2,
        login_lockout_seconds=60,
        login_lockout_max_seconds=150,
    )
    user, password = create_user(um)
    for wait in (61, 121, 151, 151):
        _wrong(um, user.email, 2)
        um_clock.advance(seconds=wait)
    assert [e.metadata["seconds"] for e in auth_audit(um, "user.locked")] == [60, 120, 150, 150]
    assert um.auth.login(user.email, password).session_id


def test_lockout_case_variants() -> None:
    """SEC-RL-05: ``Alice@X.com`` and ``alice@x.com`` (and padded forms) share one counter."""
    um = make_um(login_max_failures=4)
    _, password = create_user(um, "alice@x.com")
    _wrong(um, "Alice@X.com", 2)
    _wrong(um, "alice@x.com", 1)
    _wrong(um, " ALICE@x.COM ", 1)
    for variant in ("alice@x.com", "Alice@X.com"):
        _refused(um, variant, password)


def test_lockout_case_variants_below_threshold_do_not_lock() -> None:
    """SEC-RL-05 (control): three variant failures under a threshold of 4 leave login open,
    so the previous test really measures the shared counter."""
    um = make_um(login_max_failures=4)
    _, password = create_user(um, "alice@x.com")
    _wrong(um, "Alice@X.com", 2)
    _wrong(um, "alice@x.com", 1)
    assert um.auth.login("ALICE@X.COM", password).session_id


def test_lockout_reset_while_locked(auth_audit: Any) -> None:
    """SEC-RL-04: a locked user can still ask for a reset link and reset the password, and
    then logs in with the new password at once; the old one no longer works."""
    um = make_um(login_max_failures=3)
    user, password = create_user(um)
    _wrong(um, user.email, 3)
    _refused(um, user.email, password)

    assert um.users.request_password_reset(user.email) is None
    mails = um.outbox.find(to=user.email, template="password_reset")
    assert len(mails) == 1
    new_password = random_password()
    assert um.users.reset_password(extract_token(mails[0]), new_password) is None

    assert um.auth.login(user.email, new_password).session_id
    _refused(um, user.email, password)
    assert len(auth_audit(um, "user.password_reset")) == 1


def test_lockout_concurrent_50(auth_spy_hasher: Any, auth_concurrently: Any) -> None:
    """SEC-RL-03 (CVE-2024-4629): 50 wrong logins released together by a Barrier run at most
    3 password verifications (threshold 3), and the correct password is refused afterwards.
    Repeated on fresh instances."""
    for _ in range(CONCURRENT_ITERATIONS):
        um = make_um(login_max_failures=3)
        user, password = create_user(um)
        spy = auth_spy_hasher(um)

        results = auth_concurrently(
            50, lambda i, um=um, email=user.email: um.auth.login(email, f"wrong-{i}-password!")
        )

        assert all(not ok and type(err) is InvalidCredentials for ok, err in results)
        assert 1 <= spy.verifications <= 3
        _refused(um, user.email, password)
        assert spy.verifications <= 3  # the refused correct password was not verified either


def test_lockout_unknown_email_does_not_block_registration(um_clock: FakeClock) -> None:
    """SEC-RL-06: failures against an address nobody owns yet lock that address like any
    other (no enumeration), but do not stop its later registration, and the new owner can
    sign in once the temporary lock has passed."""
    um = make_um(clock=um_clock, login_max_failures=3)
    email = "newcomer@example.com"
    _wrong(um, email, 3)

    password = random_password()
    result = um.users.register(email, password)
    assert result.user is not None
    assert um.outbox.last(to=email, template="verify_email") is not None

    um_clock.advance(seconds=um.settings.login_lockout_seconds + 1)
    assert um.auth.login(email, password).session_id


def test_lockout_unknown_email_failures_below_threshold_allow_immediate_login() -> None:
    """SEC-RL-06: failures that did not reach the threshold never stand in the way of the
    account registered afterwards."""
    um = make_um(login_max_failures=3)
    email = "newcomer@example.com"
    _wrong(um, email, 2)
    password = random_password()
    assert um.users.register(email, password).user is not None
    assert um.auth.login(email, password).session_id


# --- per-IP throttles (SEC-RL-02) ---------------------------------------------------------

_TIGHT = BuiltinLimits(
    login_per_ip=Limit(3, 60),
    register_per_ip=Limit(3, 60),
    forgot_per_ip=Limit(3, 60),
    refresh_per_ip=Limit(3, 60),
)


def _flow(um: UserManagement, flow: str) -> Callable[[RequestContext], Any]:
    """One call of ``flow`` that succeeds when not throttled."""
    user, password = create_user(um)
    if flow == "login":
        return lambda ctx: um.auth.login(user.email, password, ctx=ctx)
    if flow == "register":
        return lambda ctx: um.users.register(
            f"new-{random_password()[3:11].lower()}@example.com", random_password(), ctx=ctx
        )
    if flow == "forgot":
        return lambda ctx: um.users.request_password_reset(user.email, ctx=ctx)
    current = [um.auth.login(user.email, password).refresh_token]

    def refresh(ctx: RequestContext) -> Any:
        pair = um.auth.refresh(current[0], ctx=ctx)
        current[0] = pair.refresh_token
        return pair

    return refresh


@pytest.mark.parametrize("flow", ["login", "register", "forgot", "refresh"])
def test_lockout_per_ip_limits(flow: str, um_clock: FakeClock) -> None:
    """SEC-RL-02: login, register, forgot-password and refresh are limited per client IP:
    over the limit → RateLimited with a retry-after (the adapter's 429 + Retry-After); other
    IPs are unaffected; the window passes."""
    um = UserManagement.in_memory(Settings.for_tests(), clock=um_clock, limits=_TIGHT)
    call = _flow(um, flow)
    attacker = RequestContext(ip="203.0.113.7")
    for _ in range(3):
        call(attacker)
    with pytest.raises(RateLimited) as info:
        call(attacker)
    assert 0 < info.value.retry_after <= 60
    assert info.value.to_dict()["code"] == "rate_limited"
    call(RequestContext(ip="198.51.100.1"))
    um_clock.advance(seconds=61)
    call(attacker)


def test_lockout_per_ip_refusals_do_not_touch_the_account_counter(auth_audit: Any) -> None:
    """SEC-RL-02 / SEC-RL-01: a request refused by the per-IP limit never reaches the
    account's lockout counter: 20 guesses from one throttled IP (3 allowed) do not reach a
    threshold of 10, so the owner signs in from elsewhere at once."""
    um = UserManagement.in_memory(
        Settings.for_tests(login_max_failures=10), clock=FakeClock(), limits=_TIGHT
    )
    user, password = create_user(um)
    attacker = RequestContext(ip="203.0.113.7")
    outcomes = []
    for i in range(20):
        try:
            um.auth.login(user.email, f"guess-{i}-{random_password()}", ctx=attacker)
        except (RateLimited, InvalidCredentials) as exc:
            outcomes.append(type(exc))
    assert outcomes == [InvalidCredentials] * 3 + [RateLimited] * 17
    assert len(auth_audit(um, "user.login_failed")) == 3
    assert um.auth.login(user.email, password, ctx=RequestContext(ip="192.0.2.1")).session_id
