"""Redis backends: the shared cache, rate limiter, lockout counter and access-token
denylist that make several stateless processes behave as one.

Chosen by ``REDIS_URL`` (``redis://``, ``rediss://``, ``redis+cluster://h:p,h:p`` or
``REDIS_CLUSTER=true``); without it the in-process backends are used. Installed with
``pip install "usermgmt[redis]"``. :func:`build` is what the backend registry calls.

=================  =============================  ===========================================
Port               Redis implementation           keys (``um:`` prefix, ``{…}`` hash tag)
=================  =============================  ===========================================
Cache              :class:`RedisCache`            as given (``um:{o:<org>}:v``, ``…:u:<user>``)
RateLimiter        :class:`RedisRateLimiter`      ``um:rl:{<key>}`` moving-window log (LIST)
AttemptCounter     :class:`RedisAttemptCounter`   ``um:la:{<key>}`` lockout state (HASH)
RevocationStore    :class:`RedisRevocationStore`  ``um:rv:{<session id>}``
=================  =============================  ===========================================

Each is wrapped by its failover counterpart of :mod:`usermgmt.backends.redis.fallback`
(what happens when Redis fails: F1-F5), which also counts every degradation in
:data:`degradations` and tells the listeners of :func:`register_degradation_listener`.

Importing this package does not import the ``redis`` driver; :func:`build` does, on
first use of a backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from usermgmt.backends.redis.cache import RedisCache
from usermgmt.backends.redis.client import (
    DEFAULT_PREFIX,
    CircuitBreaker,
    RedisConnection,
    clean_url,
    connect,
    make_client,
)
from usermgmt.backends.redis.fallback import (
    DegradationMonitor,
    FailoverAttemptCounter,
    FailoverCache,
    FailoverRateLimiter,
    FailoverRevocationStore,
    degradations,
    monitor,
    register_degradation_listener,
)
from usermgmt.backends.redis.ratelimit import RedisAttemptCounter, RedisRateLimiter
from usermgmt.backends.redis.revocation import RedisRevocationStore

if TYPE_CHECKING:
    from usermgmt.config import Settings
    from usermgmt.ports import AttemptCounter, Cache, Clock, RateLimiter, RevocationStore

__all__ = [
    "DEFAULT_PREFIX",
    "FALLBACK_STRICTNESS",
    "CircuitBreaker",
    "DegradationMonitor",
    "FailoverAttemptCounter",
    "FailoverCache",
    "FailoverRateLimiter",
    "FailoverRevocationStore",
    "RedisAttemptCounter",
    "RedisCache",
    "RedisConnection",
    "RedisRateLimiter",
    "RedisRevocationStore",
    "build",
    "clean_url",
    "connect",
    "degradations",
    "make_client",
    "monitor",
    "register_degradation_listener",
    "revocation_ttl_floor",
]

#: While Redis fails, rate limits are divided by this (at least 1 request per window).
FALLBACK_STRICTNESS = 4

#: Extra lifetime of a denylist entry beyond the longest-lived access token (clock skew).
REVOCATION_MARGIN_SECONDS = 5


def revocation_ttl_floor(settings: Settings) -> float:
    """The shortest lifetime of a denylist entry: longer than any access token it kills."""
    return float(
        settings.access_token_ttl_seconds + settings.jwt_leeway_seconds + REVOCATION_MARGIN_SECONDS
    )


def build(
    settings: Settings,
    clock: Clock,
    *,
    connection: RedisConnection | None = None,
    lockout_backstop: AttemptCounter | None = None,
) -> tuple[Cache, RateLimiter, AttemptCounter, RevocationStore]:
    """``(cache, rate_limiter, attempts, revocations)`` on ``REDIS_URL``, with failover.

    ``lockout_backstop`` (the SQL database's lockout counter) is where the lockout is
    counted while Redis fails, before the in-process counter (SECURITY.md F1).
    Nothing touches the network here: the client connects on first use, so an
    application starts (degraded, see :mod:`~usermgmt.backends.redis.fallback`) while
    Redis is down.
    """
    from usermgmt.backends.memory import MemoryAttemptCounter, MemoryRateLimiter

    conn = connection if connection is not None else connect(settings)
    mode = settings.rate_limit_failure_mode
    lockout = {
        "max_failures": settings.login_max_failures,
        "lockout_seconds": settings.login_lockout_seconds,
        "max_lockout_seconds": settings.login_lockout_max_seconds,
    }
    cache = FailoverCache(RedisCache(conn))
    limiter = FailoverRateLimiter(
        RedisRateLimiter(conn, clock),
        MemoryRateLimiter(clock),
        strictness=FALLBACK_STRICTNESS,
        mode=mode,
    )
    attempts = FailoverAttemptCounter(
        RedisAttemptCounter(conn, clock, **lockout),
        MemoryAttemptCounter(clock, **lockout),
        backstop=lockout_backstop,
        mode=mode,
    )
    revocations = FailoverRevocationStore(
        RedisRevocationStore(conn, min_ttl_seconds=revocation_ttl_floor(settings))
    )
    return cache, limiter, attempts, revocations
