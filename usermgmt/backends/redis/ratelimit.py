"""Rate limiting and login lockout on Redis: one Lua script per operation, so every
decision is atomic across threads, processes and hosts.

Time comes from the injected clock and is passed into the scripts (``now``, seconds
since the epoch, as exact decimal text), so the logic is the same as the in-process
backends' and runs under a :class:`~usermgmt.clock.FakeClock` in tests; application
servers need synchronised clocks (NTP), as JWT expiry already requires. Redis TTLs
only collect garbage: they are never shorter than the state they hold.

Key layout (``um:`` is the connection prefix; the braces are the Cluster hash tag, so
each limited key or account lives in one slot)::

    um:rl:{<limit key>}    LIST of hit timestamps, newest first (the moving-window log)
    um:la:{<account key>}  HASH count, locked_until, level, updated_at (the lockout state)
"""

from __future__ import annotations

import math
from typing import Any

from usermgmt.backends.redis.client import RedisConnection
from usermgmt.clock import SystemClock
from usermgmt.ports import AttemptDecision, Clock, RateLimitResult
from usermgmt.security.limits import LOCKOUT_FORGET_AFTER_SECONDS, check_lockout_settings

__all__ = ["RedisAttemptCounter", "RedisRateLimiter"]

#: An unlocked lockout state untouched this long is forgotten (as in memory).
FORGET_AFTER_SECONDS = LOCKOUT_FORGET_AFTER_SECONDS

# --- moving-window log ------------------------------------------------------------------------
# KEYS[1] the log; ARGV: now, limit, window (s), cost, ttl (ms).
# Returns {allowed (0/1), hits in the window, oldest hit in the window (text) or nil}.
# A hit at exactly now - window has left the window (as in MemoryRateLimiter); a refused
# hit is not counted. The list holds one entry per unit of cost, newest first.
_HIT = """
local key = KEYS[1]
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local horizon = now - tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
while true do
    local oldest = redis.call('LINDEX', key, -1)
    if not oldest or tonumber(oldest) > horizon then break end
    redis.call('RPOP', key)
end
local used = redis.call('LLEN', key)
local allowed = 0
if used + cost <= limit then
    local batch = {}
    for i = 1, cost do
        batch[#batch + 1] = ARGV[1]
        if #batch == 1000 or i == cost then
            redis.call('LPUSH', key, unpack(batch))
            batch = {}
        end
    end
    used = used + cost
    allowed = 1
    redis.call('PEXPIRE', key, ARGV[5])
end
return {allowed, used, redis.call('LINDEX', key, -1)}
"""

# --- lockout ---------------------------------------------------------------------------------
# Shared prologue: read the state of KEYS[1] at ARGV[1] = now, forgetting a state left
# unlocked and untouched for ARGV[2] seconds; `save` writes it back with a TTL that
# outlives both the lock and the decay period.
_STATE = """
local key = KEYS[1]
local now_text = ARGV[1]
local now = tonumber(now_text)
local forget = tonumber(ARGV[2])
local s = redis.call('HMGET', key, 'count', 'locked_until', 'level', 'updated_at')
local count = tonumber(s[1]) or 0
local locked_until = tonumber(s[2]) or 0
local level = tonumber(s[3]) or 0
local updated_at = tonumber(s[4])
if updated_at == nil or (locked_until <= now and now - updated_at >= forget) then
    count, locked_until, level, updated_at = 0, 0, 0, now
end
local function fmt(x) return string.format('%.17g', x) end
local function save()
    redis.call('HSET', key, 'count', count, 'locked_until', fmt(locked_until),
               'level', level, 'updated_at', fmt(updated_at))
    local keep = math.max(locked_until - now, 0) + forget
    redis.call('PEXPIRE', key, math.ceil(keep * 1000) + 1000)
end
"""

# ARGV[3] = max_failures. Returns {allowed (0/1), retry_after (text)}.
_ACQUIRE = (
    _STATE
    + """
local max_failures = tonumber(ARGV[3])
if locked_until > now then
    return {0, fmt(locked_until - now)}
end
if count >= max_failures then
    return {0, '1'}  -- refused attempts do not touch the state, so it still decays
end
count = count + 1
updated_at = now
save()
return {1, '0'}
"""
)

# ARGV[3..5] = max_failures, lockout, max_lockout. Returns the lock duration (text) or nil.
_FAILURE = (
    _STATE
    + """
local max_failures = tonumber(ARGV[3])
local lockout = tonumber(ARGV[4])
local max_lockout = tonumber(ARGV[5])
updated_at = now
if count < max_failures then
    save()
    return false
end
level = level + 1
local duration = math.min(lockout * 2 ^ math.min(level - 1, 64), max_lockout)
locked_until = now + duration
count = 0
save()
return fmt(duration)
"""
)

# Give back one reservation; nothing else changes.
_RELEASE = """
local count = tonumber(redis.call('HGET', KEYS[1], 'count'))
if count and count > 0 then
    redis.call('HINCRBY', KEYS[1], 'count', -1)
end
return 0
"""


def _now_text(clock: Clock) -> str:
    return repr(clock.now().timestamp())


class RedisRateLimiter:
    """A moving-window log limiter shared by every process (exact, no bucket edges).

    The same semantics as :class:`~usermgmt.backends.memory.MemoryRateLimiter`: a hit is
    remembered until it leaves the window, a refused hit is not counted, and
    ``reset_after`` is the time until the oldest remembered hit leaves. One script call
    per hit decides and counts atomically, and answers ``remaining`` in the same step.
    """

    def __init__(self, connection: RedisConnection, clock: Clock | None = None) -> None:
        self._redis = connection
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._hit = connection.script(_HIT)

    def _key(self, key: str) -> str:
        return self._redis.key("rl", key)

    def hit(self, key: str, *, limit: int, window_seconds: float, cost: int = 1) -> RateLimitResult:
        """Count ``cost`` against ``limit`` per ``window_seconds``; raises ValueError
        for a limit or cost below 1 or a window that is not positive."""
        if limit < 1 or cost < 1 or window_seconds <= 0:
            raise ValueError("limit and cost must be >= 1 and window_seconds > 0")
        now_text = _now_text(self._clock)
        now = float(now_text)
        ttl_ms = math.ceil(window_seconds * 1000) + 1000
        reply: Any = self._redis.eval(
            self._hit,
            [self._key(key)],
            [now_text, limit, repr(float(window_seconds)), cost, ttl_ms],
        )
        allowed, used, oldest = int(reply[0]), int(reply[1]), reply[2] if len(reply) > 2 else None
        reset_after = float(oldest) + window_seconds - now if oldest is not None else window_seconds
        return RateLimitResult(
            allowed=bool(allowed),
            limit=limit,
            remaining=max(0, limit - used),
            reset_after=max(0.0, reset_after),
        )

    def reset(self, key: str) -> None:
        """Forget every hit of ``key``."""
        full = self._key(key)
        self._redis.run(lambda client: client.delete(full), command="DEL")


class RedisAttemptCounter:
    """Per-account login lockout with exponential backoff, shared by every process.

    The same semantics as :class:`~usermgmt.backends.memory.MemoryAttemptCounter`
    (SEC-RL-01…06): :meth:`acquire` reserves an attempt before the password is checked
    (CVE-2024-4629), so however many processes and threads race, no more than
    ``max_failures`` verifications run for an account; the threshold of failures locks
    it for ``lockout_seconds``, doubling per further lock up to ``max_lockout_seconds``;
    refused attempts never extend a lock; state left unlocked for 24 hours is forgotten.
    Each operation is one Lua script (or one DEL).
    """

    def __init__(
        self,
        connection: RedisConnection,
        clock: Clock | None = None,
        *,
        max_failures: int = 10,
        lockout_seconds: float = 60.0,
        max_lockout_seconds: float = 3600.0,
    ) -> None:
        check_lockout_settings(max_failures, lockout_seconds, max_lockout_seconds)
        self._redis = connection
        self._clock: Clock = clock if clock is not None else SystemClock()
        self.max_failures = max_failures
        self.lockout_seconds = lockout_seconds
        self.max_lockout_seconds = max_lockout_seconds
        self._acquire = connection.script(_ACQUIRE)
        self._failure = connection.script(_FAILURE)
        self._release = connection.script(_RELEASE)

    def _key(self, key: str) -> str:
        return self._redis.key("la", key)

    def acquire(self, key: str) -> AttemptDecision:
        """Reserve an attempt; refused while locked (``retry_after`` = the rest of the
        lock) or while ``max_failures`` attempts are reserved (``retry_after`` = 1 s)."""
        reply: Any = self._redis.eval(
            self._acquire,
            [self._key(key)],
            [_now_text(self._clock), FORGET_AFTER_SECONDS, self.max_failures],
        )
        return AttemptDecision(allowed=int(reply[0]) == 1, retry_after=float(reply[1]))

    def record_failure(self, key: str) -> float | None:
        """A reserved attempt failed; the lock duration in seconds if the key is now locked."""
        reply: Any = self._redis.eval(
            self._failure,
            [self._key(key)],
            [
                _now_text(self._clock),
                FORGET_AFTER_SECONDS,
                self.max_failures,
                repr(float(self.lockout_seconds)),
                repr(float(self.max_lockout_seconds)),
            ],
        )
        return None if reply is None else float(reply)

    def record_success(self, key: str) -> None:
        """A reserved attempt succeeded: forget the failures, the lock and the backoff level."""
        self.reset(key)

    def release(self, key: str) -> None:
        """Give back one reserved attempt (the check could not run)."""
        self._redis.eval(self._release, [self._key(key)], [])

    def reset(self, key: str) -> None:
        """Forget everything about ``key``."""
        full = self._key(key)
        self._redis.run(lambda client: client.delete(full), command="DEL")
