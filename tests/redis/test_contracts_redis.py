"""The Redis backends against the contract suites, unchanged, on a real redis-server and a
real Redis Cluster: first the bare backends, then as :func:`usermgmt.backends.redis.build`
wires them (behind their failover wrappers)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from usermgmt.backends.memory import MemoryAttemptCounter, MemoryRateLimiter
from usermgmt.backends.redis import (
    FailoverAttemptCounter,
    FailoverCache,
    FailoverRateLimiter,
    FailoverRevocationStore,
    RedisAttemptCounter,
    RedisCache,
    RedisConnection,
    RedisRateLimiter,
    RedisRevocationStore,
)
from usermgmt.clock import FakeClock
from usermgmt.ports import AttemptCounter, Cache, RateLimiter, RevocationStore
from usermgmt.testing.contracts import (
    AttemptCounterContract,
    CacheContract,
    RateLimiterContract,
    RevocationStoreContract,
)

pytestmark = pytest.mark.redis

WRAPPED = [pytest.param(False, id="bare"), pytest.param(True, id="failover")]


@pytest.fixture(params=WRAPPED)
def wrapped(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
def cache(redis_connection: RedisConnection, wrapped: bool) -> Cache:
    backend = RedisCache(redis_connection)
    return FailoverCache(backend) if wrapped else backend


@pytest.fixture
def rate_limiter(redis_connection: RedisConnection, clock: FakeClock, wrapped: bool) -> RateLimiter:
    backend = RedisRateLimiter(redis_connection, clock)
    return FailoverRateLimiter(backend, MemoryRateLimiter(clock)) if wrapped else backend


@pytest.fixture
def attempt_counter(
    redis_connection: RedisConnection, clock: FakeClock, wrapped: bool
) -> AttemptCounter:
    limits = {"max_failures": 3, "lockout_seconds": 60, "max_lockout_seconds": 3600}
    backend = RedisAttemptCounter(redis_connection, clock, **limits)
    return (
        FailoverAttemptCounter(backend, MemoryAttemptCounter(clock, **limits))
        if wrapped
        else backend
    )


@pytest.fixture
def revocation_store(redis_connection: RedisConnection, wrapped: bool) -> RevocationStore:
    backend = RedisRevocationStore(redis_connection)
    return FailoverRevocationStore(backend) if wrapped else backend


class TestCache(CacheContract):
    pass


class TestRateLimiter(RateLimiterContract):
    pass


class TestAttemptCounter(AttemptCounterContract):
    pass


class TestRevocationStore(RevocationStoreContract):
    pass


# --- beyond the contracts: what Redis adds -------------------------------------------------------


def _keys(connection: RedisConnection) -> list[str]:
    if connection.cluster:
        from redis.cluster import RedisCluster

        found = connection.run(lambda client: client.keys("*", target_nodes=RedisCluster.PRIMARIES))
    else:
        found = connection.run(lambda client: client.keys("*"))
    return sorted(found)


def test_key_layout_prefix_and_hash_tags(
    redis_connection: RedisConnection, clock: FakeClock
) -> None:
    from uuid import UUID

    cache = RedisCache(redis_connection)
    cache.set("um:{o:abc}:v", "1")
    cache.set("plain", "x")
    RedisRateLimiter(redis_connection, clock).hit("login:ip:10.0.0.1", limit=5, window_seconds=60)
    counter = RedisAttemptCounter(redis_connection, clock)
    assert counter.acquire("login:{odd}@example.com").allowed
    sid = UUID("01900000-0000-7000-8000-000000000001")
    RedisRevocationStore(redis_connection).revoke([sid], 60)
    assert _keys(redis_connection) == sorted(
        [
            "um:{o:abc}:v",  # already prefixed: stored as given
            "um:plain",
            "um:rl:{login:ip:10.0.0.1}",
            "um:la:{login:(odd)@example.com}",  # braces inside never split the hash tag
            f"um:rv:{{{sid.hex}}}",
        ]
    )


def test_permission_cache_keys_of_one_org_share_a_slot(
    redis_connection: RedisConnection,
) -> None:
    cache = RedisCache(redis_connection)
    cache.set("um:{o:1}:v", "v1")
    cache.set("um:{o:1}:u:2", "entry")
    if redis_connection.cluster:
        # a plain MGET refuses keys of different slots on a Cluster: these share one
        values = redis_connection.run(lambda c: c.mget(["um:{o:1}:v", "um:{o:1}:u:2"]))
        assert values == ["v1", "entry"]
    assert cache.get_many(["um:{o:1}:v", "um:{o:1}:u:2", "um:{o:2}:v"]) == ["v1", "entry", None]


def test_many_keys_across_slots(redis_connection: RedisConnection) -> None:
    cache = RedisCache(redis_connection)
    keys = [f"k{i}" for i in range(200)]
    for i, key in enumerate(keys):
        cache.set(key, str(i), ttl=60)
    assert cache.get_many(keys) == [str(i) for i in range(200)]
    cache.delete(*keys)
    assert cache.get_many(keys) == [None] * 200


def test_incr_refuses_a_non_integer(redis_connection: RedisConnection) -> None:
    cache = RedisCache(redis_connection)
    cache.set("text", "abc")
    with pytest.raises(ValueError):
        cache.incr("text")
    assert cache.incr("n", ttl=0) == 1  # ttl <= 0: expired at once, as in memory


def test_revocation_keeps_the_longer_entry_and_applies_the_floor(
    redis_connection: RedisConnection,
) -> None:
    from usermgmt.ids import new_id

    store = RedisRevocationStore(redis_connection, min_ttl_seconds=120)
    a, b = new_id(), new_id()
    store.revoke([a], ttl_seconds=1)  # below the floor: lives 120 s
    store.revoke([b], ttl_seconds=3600)
    store.revoke([b], ttl_seconds=10)  # shorter: the 3600 s entry is kept
    ttl_a = redis_connection.run(lambda c: c.pttl(redis_connection.key("rv", a.hex)))
    ttl_b = redis_connection.run(lambda c: c.pttl(redis_connection.key("rv", b.hex)))
    assert 110_000 < ttl_a <= 120_000
    assert ttl_b > 3_500_000


def test_revoking_many_sessions_at_once(redis_connection: RedisConnection) -> None:
    from usermgmt.ids import new_id

    store = RedisRevocationStore(redis_connection)
    ids = [new_id() for _ in range(1200)]
    store.revoke(ids, ttl_seconds=60)
    assert all(store.is_revoked(i) for i in ids[::97])
    assert not store.is_revoked(new_id())


def test_rate_limit_shared_by_two_connections(
    redis_url: str, connection_factory: Callable[..., RedisConnection], clock: FakeClock
) -> None:
    one = RedisRateLimiter(connection_factory(redis_url), clock)
    two = RedisRateLimiter(connection_factory(redis_url), clock)
    results = [(one if i % 2 else two).hit("k", limit=5, window_seconds=60) for i in range(7)]
    assert [r.allowed for r in results] == [True] * 5 + [False] * 2
    assert [r.remaining for r in results[:5]] == [4, 3, 2, 1, 0]


def test_lockout_state_has_a_ttl_beyond_the_lock_and_decay(
    redis_connection: RedisConnection, clock: FakeClock
) -> None:
    counter = RedisAttemptCounter(
        redis_connection, clock, max_failures=1, lockout_seconds=60, max_lockout_seconds=60
    )
    assert counter.acquire("k").allowed
    assert counter.record_failure("k") == pytest.approx(60)
    ttl = redis_connection.run(lambda c: c.pttl(redis_connection.key("la", "k")))
    assert ttl > (24 * 3600 + 60) * 1000  # the backoff level must outlive the lock


def test_rate_limit_fractional_window_and_cost(
    redis_connection: RedisConnection, clock: FakeClock
) -> None:
    limiter = RedisRateLimiter(redis_connection, clock)
    assert limiter.hit("k", limit=3, window_seconds=1.5, cost=3).allowed
    refused = limiter.hit("k", limit=3, window_seconds=1.5)
    assert not refused.allowed
    assert refused.reset_after == pytest.approx(1.5)
    clock.advance(seconds=1.5)
    assert limiter.hit("k", limit=3, window_seconds=1.5).remaining == 2
    with pytest.raises(ValueError):
        limiter.hit("k", limit=0, window_seconds=1)
