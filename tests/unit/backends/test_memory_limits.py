"""Memory cache, rate limiter, attempt counter and revocation store: details
beyond their contracts."""

from __future__ import annotations

import dataclasses

import pytest

from usermgmt.backends.memory import (
    MemoryAttemptCounter,
    MemoryCache,
    MemoryRateLimiter,
    MemoryRevocationStore,
)
from usermgmt.clock import FakeClock
from usermgmt.ids import new_id
from usermgmt.ports import RateLimitResult


def test_cache_drops_expired_entries_when_read() -> None:
    clock = FakeClock()
    cache = MemoryCache(clock)
    cache.set("k", "v", ttl=1)
    cache.set("gone", "v", ttl=0)
    assert cache.get("gone") is None
    clock.advance(seconds=1)
    assert len(cache) == 1
    assert cache.get("k") is None
    assert len(cache) == 0


def test_cache_sweeps_expired_entries_on_writes() -> None:
    clock = FakeClock()
    cache = MemoryCache(clock)
    for i in range(100):
        cache.set(f"old-{i}", "v", ttl=1)
    clock.advance(seconds=2)
    for i in range(1024):
        cache.set(f"new-{i}", "v")
    assert len(cache) == 1024


def test_cache_incr_of_a_non_integer_raises_and_clear() -> None:
    cache = MemoryCache(FakeClock())
    cache.set("k", "abc")
    with pytest.raises(ValueError):
        cache.incr("k")
    assert cache.get("k") == "abc"
    cache.clear()
    assert cache.get("k") is None


def test_rate_limiter_rejects_nonsense_arguments() -> None:
    limiter = MemoryRateLimiter(FakeClock())
    for kwargs in ({"limit": 0}, {"window_seconds": 0}, {"cost": 0}):
        args = {"limit": 1, "window_seconds": 1.0, "cost": 1} | kwargs
        with pytest.raises(ValueError):
            limiter.hit("k", **args)  # type: ignore[arg-type]


def test_rate_limiter_cost_above_limit_is_refused() -> None:
    result = MemoryRateLimiter(FakeClock()).hit("k", limit=2, window_seconds=10, cost=3)
    assert not result.allowed
    assert result.remaining == 2
    assert result.reset_after == pytest.approx(10)


def test_attempt_counter_validates_its_configuration() -> None:
    with pytest.raises(ValueError):
        MemoryAttemptCounter(FakeClock(), max_failures=0)
    with pytest.raises(ValueError):
        MemoryAttemptCounter(FakeClock(), lockout_seconds=60, max_lockout_seconds=30)


def test_attempt_counter_failure_without_reservation_counts_nothing() -> None:
    counter = MemoryAttemptCounter(FakeClock(), max_failures=1)
    assert counter.record_failure("k") is None
    assert counter.acquire("k").allowed


def test_attempt_counter_backoff_never_overflows() -> None:
    clock = FakeClock()
    counter = MemoryAttemptCounter(clock, max_failures=1, lockout_seconds=1, max_lockout_seconds=5)
    for _ in range(1100):
        assert counter.acquire("k").allowed
        duration = counter.record_failure("k")
        assert duration is not None
        clock.advance(seconds=duration)
    assert duration == 5


def test_revocation_keeps_the_longer_ttl() -> None:
    clock = FakeClock()
    store = MemoryRevocationStore(clock)
    sid = new_id()
    store.revoke([sid], ttl_seconds=100)
    store.revoke([sid], ttl_seconds=1)
    clock.advance(seconds=50)
    assert store.is_revoked(sid)
    store.revoke([sid], ttl_seconds=100)  # extends
    clock.advance(seconds=90)
    assert store.is_revoked(sid)
    store.clear()
    assert not store.is_revoked(sid)


def test_a_hit_result_is_a_complete_rate_limit_result() -> None:
    """hit() builds its result slot by slot: every field of the dataclass is set."""
    limiter = MemoryRateLimiter()
    result = limiter.hit("k", limit=2, window_seconds=60)
    assert [f.name for f in dataclasses.fields(RateLimitResult)] == [
        "allowed",
        "limit",
        "remaining",
        "reset_after",
    ]
    assert type(result) is RateLimitResult
    assert result == RateLimitResult(allowed=True, limit=2, remaining=1, reset_after=60)
    limiter.hit("k", limit=2, window_seconds=60)
    refused = limiter.hit("k", limit=2, window_seconds=60)
    assert (refused.allowed, refused.remaining) == (False, 0)
    assert 0 < refused.reset_after <= 60
    assert hash(refused) == hash(dataclasses.replace(refused))
