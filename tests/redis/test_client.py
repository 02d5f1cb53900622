"""The connection layer: URLs, the registry wiring, the circuit breaker and the
degradation counters."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pytest

from usermgmt.app import UserManagement
from usermgmt.backends.redis import (
    CircuitBreaker,
    DegradationMonitor,
    FailoverAttemptCounter,
    FailoverCache,
    FailoverRateLimiter,
    FailoverRevocationStore,
    RedisConnection,
    clean_url,
    connect,
    make_client,
    revocation_ttl_floor,
)
from usermgmt.backends.redis.client import _cluster_startup
from usermgmt.config import Settings
from usermgmt.errors import BackendUnavailable, ConfigurationError

pytestmark = pytest.mark.redis


# --- URLs -----------------------------------------------------------------------------------------


def test_seed_ioredis_options_are_dropped(caplog: pytest.LogCaptureFixture) -> None:
    url, dropped = clean_url(
        "redis://:secret@cache:6379/2?maxRetriesPerRequest=3&retryStrategy=exponential"
        "&socket_timeout=30&ssl_cert_reqs=none"
    )
    assert url == "redis://:secret@cache:6379/2?ssl_cert_reqs=none"
    assert dropped == ["maxRetriesPerRequest", "retryStrategy", "socket_timeout"]
    with caplog.at_level(logging.WARNING, logger="usermgmt.redis"):
        connect(Settings.for_tests(redis_url="redis://h:6379?maxRetriesPerRequest=3"))
    assert "maxRetriesPerRequest" in caplog.text
    assert "secret" not in caplog.text


def test_cluster_url_startup_nodes() -> None:
    single, nodes = _cluster_startup("redis+cluster://user:pw@a:7000,b:7001, c ,[::1]:7002/?x=1")
    assert single == "redis://user:pw@a:7000/?x=1"
    assert nodes == [("a", 7000), ("b", 7001), ("c", 6379), ("::1", 7002)]
    single, _ = _cluster_startup("rediss+cluster://a:7000")
    assert single.startswith("rediss://a:7000")
    with pytest.raises(ConfigurationError):
        _cluster_startup("redis+cluster://")


def test_kinds_of_url() -> None:
    from redis import Redis
    from redis.cluster import RedisCluster

    plain = make_client("redis://127.0.0.1:1/0", socket_timeout=0.1)
    assert isinstance(plain, Redis)
    options = plain.connection_pool.connection_kwargs
    assert options["socket_timeout"] == options["socket_connect_timeout"] == 0.1
    assert plain.get_retry() is not None
    assert plain.get_retry()._retries == 0  # no client retries (redis-py 5 has no getter)
    tls = make_client("rediss://127.0.0.1:1/0")
    assert tls.connection_pool.connection_class.__name__ == "SSLConnection"
    assert connect(Settings.for_tests(redis_url="redis+cluster://h:1,h:2")).cluster
    assert connect(Settings.for_tests(redis_url="redis://h:1", redis_cluster=True)).cluster
    assert not connect(Settings.for_tests(redis_url="rediss://h:1")).cluster
    with pytest.raises(ConfigurationError):
        connect(Settings.for_tests(redis_url="memcached://h:1"))
    with pytest.raises(ConfigurationError):
        make_client("http://h:1")
    assert RedisCluster  # imported lazily by make_client for cluster URLs


def test_cluster_client_against_a_real_cluster(
    redis_cluster: str, connection_factory: Callable[..., RedisConnection]
) -> None:
    connection = connection_factory(redis_cluster)
    connection.ping()
    assert connection.server_version()
    # REDIS_CLUSTER=true with a plain URL naming one node discovers the rest
    first = redis_cluster.removeprefix("redis+cluster://").split(",")[0]
    other = connection_factory(f"redis://{first}/0", redis_cluster=True)
    other.run(lambda client: client.set("um:x", "1"))
    assert connection.run(lambda client: client.get("um:x")) == "1"


# --- wiring ------------------------------------------------------------------------------------------


def test_registry_builds_failover_backends(redis_server: str) -> None:
    settings = Settings.for_tests(
        redis_url=redis_server,
        access_token_ttl_seconds=600,
        jwt_leeway_seconds=30,
        login_max_failures=4,
        rate_limit_failure_mode="closed",
    )
    um = UserManagement(settings)
    b = um.backends
    assert isinstance(b.cache, FailoverCache)
    assert isinstance(b.rate_limiter, FailoverRateLimiter)
    assert b.rate_limiter.mode == "closed"
    assert isinstance(b.attempts, FailoverAttemptCounter)
    assert b.attempts.primary.max_failures == 4
    assert b.attempts.fallback.max_failures == 4
    assert isinstance(b.revocations, FailoverRevocationStore)
    assert b.revocations.primary.min_ttl_seconds == 635 == revocation_ttl_floor(settings)
    assert um.health.redis()[0] == 200
    assert um.health.overall()[1]["services"]["redis"] == "connected"


def test_starts_while_redis_is_unreachable() -> None:
    """Nothing connects at start: the application comes up degraded, not dead."""
    for url in ("redis://127.0.0.1:1/0", "redis+cluster://127.0.0.1:1,127.0.0.1:2"):
        um = UserManagement(Settings.for_tests(redis_url=url, redis_socket_timeout_seconds=0.1))
        um.seed()
        result = um.check_request_rate("198.51.100.7")
        assert result is not None
        assert result.limit == 25  # the stricter in-process limit
        assert um.health.redis()[0] == 503


# --- breaker and monitor ---------------------------------------------------------------------------


def test_circuit_breaker() -> None:
    breaker = CircuitBreaker(cooldown_seconds=0.05)
    assert breaker.allow()
    breaker.failure()
    assert breaker.is_open
    assert not breaker.allow()
    time.sleep(0.06)
    assert breaker.allow()  # one probe
    assert not breaker.allow()  # the others fail fast meanwhile
    breaker.failure()
    assert not breaker.allow()
    time.sleep(0.06)
    assert breaker.allow()
    breaker.success()
    assert not breaker.is_open
    assert breaker.allow()
    assert breaker.allow()


def test_open_breaker_skips_the_network() -> None:
    calls = []
    connection = RedisConnection(lambda: calls.append(1) or None, cluster=False)  # type: ignore[func-returns-value,arg-type,return-value]
    connection.breaker.failure()
    with pytest.raises(BackendUnavailable, match="circuit open"):
        connection.run(lambda client: client.ping())
    assert calls == []


def test_driver_errors_become_backend_unavailable() -> None:
    from redis.exceptions import ResponseError

    connection = RedisConnection(lambda: object(), cluster=False)  # type: ignore[arg-type,return-value]

    def fail(_: object) -> None:
        raise ResponseError("OOM command not allowed when used memory > 'maxmemory'")

    with pytest.raises(BackendUnavailable) as caught:
        connection.run(fail)
    assert isinstance(caught.value.__cause__, ResponseError)
    assert connection.breaker.is_open


def test_monitor_counts_logs_once_and_notifies(caplog: pytest.LogCaptureFixture) -> None:
    monitor = DegradationMonitor()
    seen: list[tuple[str, str]] = []
    unregister = monitor.register(lambda event, component: seen.append((event, component)))
    monitor.register(lambda event, component: 1 / 0)  # a broken listener is contained
    error = BackendUnavailable("down")
    with caplog.at_level(logging.INFO, logger="usermgmt.redis"):
        for _ in range(5):
            monitor.failed("ratelimit", error)
        monitor.succeeded("ratelimit")
        monitor.succeeded("ratelimit")
    assert monitor.snapshot() == {"ratelimit_backend_down": 5}
    assert seen == [("ratelimit_backend_down", "ratelimit")] * 5 + [
        ("ratelimit_backend_recovered", "ratelimit")
    ]
    events = [r.event for r in caplog.records if hasattr(r, "event")]
    assert events == ["ratelimit_backend_down", "ratelimit_backend_recovered"]
    assert not monitor.is_degraded("ratelimit")
    unregister()
    monitor.failed("cache", error)
    assert len(seen) == 6
    assert monitor.degraded_components() == ["cache"]


def test_metrics_hooks_get_redis_timings_and_degradations(
    redis_server: str, connection_factory: Callable[..., RedisConnection]
) -> None:
    hooks = pytest.importorskip("usermgmt.observability.hooks")
    from usermgmt.backends.redis import FailoverCache, RedisCache

    seen: list[tuple[str, ...]] = []

    class Recorder:
        def __getattr__(self, name: str) -> Callable[..., None]:
            return lambda *args: seen.append((name, *(a for a in args if isinstance(a, str))))

    hooks.install(Recorder())
    try:
        cache = FailoverCache(RedisCache(connection_factory(redis_server)))
        cache.set("k", "v")
        assert cache.get_many(["k"]) == ["v"]
        dead = FailoverCache(RedisCache(connection_factory("redis://127.0.0.1:1/0")))
        with pytest.raises(BackendUnavailable):
            dead.get("k")
    finally:
        hooks.uninstall()
    assert ("observe_redis", "SET") in seen
    assert ("observe_redis", "MGET") in seen
    assert ("count_degradation", "redis", "cache") in seen
