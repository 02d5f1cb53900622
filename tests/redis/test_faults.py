"""What happens when Redis fails (SECURITY.md §4A, F1-F5), against a real redis-server
that the tests stop (killed: connections refused), pause (SIGSTOP: connections hang) or
slow down (a loopback proxy holding every packet 5 seconds)."""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.redis.conftest import DelayProxy, RedisProcess
from usermgmt.app import UserManagement
from usermgmt.backends.redis import (
    FailoverAttemptCounter,
    FailoverRateLimiter,
    FailoverRevocationStore,
    build,
    degradations,
    monitor,
    register_degradation_listener,
)
from usermgmt.clock import SystemClock
from usermgmt.config import Settings
from usermgmt.errors import (
    BackendUnavailable,
    InvalidCredentials,
    RateLimited,
    TokenRevoked,
)
from usermgmt.models import RequestContext
from usermgmt.testing import create_user, extract_token

pytestmark = pytest.mark.redis

TIMEOUT = 0.25  # REDIS_SOCKET_TIMEOUT_SECONDS in these tests
MARGIN = 0.5  # scheduling, connection set-up and a cheap password hash on a busy CI machine
IP = RequestContext(ip="198.51.100.23")


@pytest.fixture
def make_um() -> Iterator[Callable[..., UserManagement]]:
    made: list[UserManagement] = []

    def make(url: str, **settings: Any) -> UserManagement:
        values: dict[str, Any] = {
            "redis_url": url,
            "redis_socket_timeout_seconds": TIMEOUT,
            "login_max_failures": 3,
        }
        values.update(settings)
        um = UserManagement(Settings.for_tests(**values))
        um.seed()
        made.append(um)
        return um

    yield make
    for um in made:
        um.close()


def _cooldown(um: UserManagement) -> None:
    """Let the circuit breaker probe Redis again."""
    attempts = um.backends.attempts
    assert isinstance(attempts, FailoverAttemptCounter)
    time.sleep(attempts.primary._redis.breaker.cooldown_seconds + 0.1)


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    try:
        result: Any = fn()
    except Exception as exc:
        result = exc
    return time.perf_counter() - started, result


def _join(um: UserManagement, owner_id: Any, org_id: Any) -> Any:
    member, _ = create_user(um)
    um.invitations.create(owner_id, org_id, member.email)
    um.invitations.accept(member.id, extract_token(um.outbox.last(to=member.email)))
    return member


def _break(server: RedisProcess, how: str) -> None:
    if how == "stopped":
        server.stop()
    else:
        server.pause()


BREAKS = [pytest.param("stopped", id="stopped"), pytest.param("paused", id="paused")]


# --- F1: rate limiting and lockout -----------------------------------------------------------


@pytest.mark.parametrize("how", BREAKS)
def test_f1_login_hammering_still_limited_and_locked(
    how: str,
    redis_process: RedisProcess,
    make_um: Callable[..., UserManagement],
    caplog: pytest.LogCaptureFixture,
) -> None:
    um = make_um(redis_process.url)
    victim, password = create_user(um)
    events: list[tuple[str, str]] = []
    unregister = register_degradation_listener(lambda event, part: events.append((event, part)))
    try:
        _break(redis_process, how)
        caplog.set_level(logging.WARNING, logger="usermgmt.redis")

        # the lockout still triggers (counted in this process), and holds the right password
        for _ in range(3):
            with pytest.raises(InvalidCredentials):
                um.auth.login(victim.email, "wrong-" + password)
        with pytest.raises(InvalidCredentials):
            um.auth.login(victim.email, password)

        # hammering from one address: 429s come, from the stricter in-process limit (30 // 4)
        outcomes = []
        for i in range(12):
            try:
                um.auth.login(f"nobody-{i}@example.com", "wrong-password-123", IP)
                outcomes.append("ok")
            except InvalidCredentials:
                outcomes.append("401")
            except RateLimited:
                outcomes.append("429")
        assert outcomes == ["401"] * 7 + ["429"] * 5

        # the global per-client limit too (100 // 4 per window)
        results = [um.check_request_rate("198.51.100.99") for _ in range(30)]
        assert [r.allowed for r in results if r] == [True] * 25 + [False] * 5
        assert results[0] is not None
        assert results[0].limit == 25
    finally:
        unregister()

    assert degradations["ratelimit_backend_down"] >= 30
    assert degradations["lockout_backend_down"] >= 1
    assert ("ratelimit_backend_down", "ratelimit") in events
    logged = [r for r in caplog.records if getattr(r, "event", None) == "ratelimit_backend_down"]
    assert logged, "ratelimit_backend_down must be logged"
    assert len(logged) == 1  # once per outage, not once per request
    assert logged[0].levelno == logging.WARNING
    assert monitor.is_degraded("ratelimit")


def test_f1_closed_mode_answers_unavailable(
    redis_process: RedisProcess, make_um: Callable[..., UserManagement]
) -> None:
    um = make_um(redis_process.url, rate_limit_failure_mode="closed")
    user, password = create_user(um)
    assert um.auth.login(user.email, password, IP).access_token
    redis_process.stop()
    with pytest.raises(BackendUnavailable):
        um.auth.login(user.email, password, IP)
    with pytest.raises(BackendUnavailable):
        um.check_request_rate("198.51.100.1")
    with pytest.raises(BackendUnavailable):
        um.auth.login(user.email, password)  # no IP: the lockout counter refuses too


def test_f1_a_failure_reserved_in_redis_is_counted_locally_when_redis_dies(
    redis_process: RedisProcess, make_um: Callable[..., UserManagement]
) -> None:
    """Failures whose reservation Redis holds are counted locally when Redis dies mid-way."""
    um = make_um(redis_process.url)
    attempts = um.backends.attempts
    assert isinstance(attempts, FailoverAttemptCounter)
    key = "login:flaky@example.com"
    assert attempts.acquire(key).allowed  # reserved in Redis
    redis_process.stop()
    assert attempts.record_failure(key) is None  # counted in-process instead
    assert attempts.acquire(key).allowed
    assert attempts.record_failure(key) is None
    assert attempts.acquire(key).allowed
    assert attempts.record_failure(key) == pytest.approx(60)  # the third failure locks
    assert not attempts.acquire(key).allowed


def test_f1_recovery_uses_redis_again(
    redis_process: RedisProcess, make_um: Callable[..., UserManagement]
) -> None:
    um = make_um(redis_process.url, rate_limit_max_requests=8)
    limiter = um.backends.rate_limiter
    assert isinstance(limiter, FailoverRateLimiter)
    redis_process.pause()
    degraded = [um.check_request_rate("c") for _ in range(3)]
    assert [(r.allowed, r.limit) for r in degraded if r] == [(True, 2), (True, 2), (False, 2)]
    redis_process.resume()
    _cooldown(um)
    result = um.check_request_rate("c3")
    assert result is not None
    assert (result.limit, result.remaining) == (8, 7)
    assert not monitor.is_degraded("ratelimit")
    assert um.health.redis()[0] == 200


# --- F2: revocation ------------------------------------------------------------------------


@pytest.mark.parametrize("how", BREAKS)
def test_f2_revoked_token_stays_rejected(
    how: str, redis_process: RedisProcess, make_um: Callable[..., UserManagement]
) -> None:
    um = make_um(redis_process.url)
    user, password = create_user(um)
    revoked = um.auth.login(user.email, password)
    valid = um.auth.login(user.email, password)
    um.auth.logout(user.id, revoked.session_id)
    with pytest.raises(TokenRevoked):
        um.auth.verify_access_token(revoked.access_token)

    _break(redis_process, how)
    for _ in range(3):
        elapsed, outcome = _timed(lambda: um.auth.verify_access_token(revoked.access_token))
        assert isinstance(outcome, TokenRevoked)  # the database answers: never "valid"
        assert elapsed < TIMEOUT + MARGIN
    assert um.auth.authenticate(valid.access_token).id == user.id  # the others still work
    assert degradations["revocation_backend_down"] >= 1


def test_f2_logout_while_redis_is_down_reaches_every_process_when_it_returns(
    redis_process: RedisProcess, make_um: Callable[..., UserManagement]
) -> None:
    um = make_um(redis_process.url)
    user, password = create_user(um)
    pair = um.auth.login(user.email, password)
    redis_process.pause()
    um.auth.logout(user.id, pair.session_id)  # the denylist write fails; the database has it
    with pytest.raises(TokenRevoked):
        um.auth.verify_access_token(pair.access_token)
    store = um.backends.revocations
    assert isinstance(store, FailoverRevocationStore)
    assert store.pending == 1
    redis_process.resume()
    _cooldown(um)
    with pytest.raises(TokenRevoked):
        um.auth.verify_access_token(pair.access_token)  # and the pending entry is written
    assert store.pending == 0
    # another process (its own backends on the same Redis) sees it
    other = build(um.settings, SystemClock())[3]
    assert other.is_revoked(pair.session_id)


# --- F4: permission cache ----------------------------------------------------------------------


@pytest.mark.parametrize("how", BREAKS)
def test_f4_permission_checks_correct_with_redis_down(
    how: str, redis_process: RedisProcess, make_um: Callable[..., UserManagement]
) -> None:
    um = make_um(redis_process.url)
    owner, _ = create_user(um)
    org = um.organizations.create(owner.id, "Acme")
    member = _join(um, owner.id, org.id)
    assert not um.authz.has_permission(member.id, org.id, "member:invite")  # cached in Redis

    _break(redis_process, how)
    assert not um.authz.has_permission(member.id, org.id, "member:invite")
    um.members.update_roles(owner.id, org.id, member.id, ["admin"])  # invalidation deferred
    assert um.authz.has_permission(member.id, org.id, "member:invite")
    assert um.authz.require(member.id, org.id, "member:read").roles == {"admin"}
    assert degradations["cache_backend_down"] >= 1

    if how == "paused":
        # the stale entry is still in Redis: the deferred invalidation runs before it is read
        redis_process.resume()
        _cooldown(um)
        assert um.authz.has_permission(member.id, org.id, "member:invite")
        assert not monitor.is_degraded("cache")


def test_health_reports_redis(
    redis_process: RedisProcess, make_um: Callable[..., UserManagement]
) -> None:
    um = make_um(redis_process.url)
    assert um.health.redis()[0] == 200
    redis_process.pause()
    code, body = um.health.redis()
    assert (code, body["status"]) == (503, "unhealthy")
    assert um.health.overall()[1]["services"]["redis"] == "disconnected"
    redis_process.resume()
    assert um.health.redis()[0] == 200


# --- F5: slow Redis ------------------------------------------------------------------------------


def test_f5_slow_redis_costs_at_most_one_timeout(
    delay_proxy: DelayProxy, make_um: Callable[..., UserManagement]
) -> None:
    um = make_um(delay_proxy.url)
    owner, password = create_user(um)
    org = um.organizations.create(owner.id, "Slow")
    pair = um.auth.login(owner.email, password, IP)
    um.auth.logout(owner.id, pair.session_id)
    live = um.auth.login(owner.email, password, IP)
    stored_hash = um.users.get(owner.id).password_hash or ""
    hash_time = min(_timed(lambda: um.hasher.verify(password, stored_hash))[0] for _ in range(3))

    delay_proxy.delay = 5.0
    calls: dict[str, Callable[[], Any]] = {
        "rate limit": lambda: um.check_request_rate("198.51.100.5"),
        "revocation": lambda: um.auth.verify_access_token(pair.access_token),
        "authenticate": lambda: um.auth.authenticate(live.access_token),
        "permission": lambda: um.authz.has_permission(owner.id, org.id, "member:invite"),
        "login": lambda: um.auth.login(owner.email, password, IP),
    }
    for name, call in calls.items():
        elapsed, outcome = _timed(call)
        assert elapsed < TIMEOUT + hash_time + MARGIN, f"{name} took {elapsed:.2f}s"
        assert not isinstance(outcome, BackendUnavailable), name
    assert isinstance(_timed(calls["revocation"])[1], TokenRevoked)
    assert _timed(calls["permission"])[1] is True

    # logins for a few breaker cool-downs (each ends with one probe that waits a timeout):
    # none is slower than one timeout plus the hash, the p95 is far below
    durations: list[float] = []
    until = time.monotonic() + 2.5
    while time.monotonic() < until:
        elapsed, outcome = _timed(lambda: um.auth.login(owner.email, password))
        assert not isinstance(outcome, Exception), outcome
        durations.append(elapsed)
    p95 = statistics.quantiles(durations, n=20)[-1]
    assert p95 < TIMEOUT + hash_time, p95
    assert max(durations) < TIMEOUT + hash_time + MARGIN, max(durations)
    assert sum(d > TIMEOUT / 2 for d in durations) >= 2  # the probes did reach the proxy
    assert degradations["ratelimit_backend_down"] >= 1
    assert degradations["revocation_backend_down"] >= 1
    assert degradations["cache_backend_down"] >= 1
