"""In-process rate limiting and login lockout."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from usermgmt.clock import SystemClock
from usermgmt.ports import AttemptDecision, Clock, RateLimitResult
from usermgmt.security.limits import (
    LOCKOUT_FORGET_AFTER_SECONDS,
    check_lockout_settings,
    lockout_duration,
)

__all__ = ["MemoryAttemptCounter", "MemoryRateLimiter"]

_SWEEP_EVERY = 1024
_new = object.__new__
_set_allowed, _set_limit, _set_remaining, _set_reset_after = (
    RateLimitResult.__dict__[name].__set__
    for name in ("allowed", "limit", "remaining", "reset_after")
)
_FORGET_AFTER = LOCKOUT_FORGET_AFTER_SECONDS


@dataclass(slots=True)
class _Log:
    window: float
    hits: deque[tuple[float, int]] = field(default_factory=deque)  # (time, cost), oldest first
    used: int = 0


class MemoryRateLimiter:
    """A moving-window log limiter (exact, no bucket edges), for one process.

    Every accepted hit is remembered until it leaves the window; a hit that would
    go over ``limit`` is refused and not counted. ``reset_after`` is the number of
    seconds until the oldest remembered hit leaves the window. Thread-safe.
    """

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock: Clock = clock if clock is not None else SystemClock()
        # The system clock's time without a datetime per hit (this runs on every request).
        self._now: Callable[[], float] = (
            time.time if type(self._clock) is SystemClock else self._clock_now
        )
        self._logs: dict[str, _Log] = {}
        self._lock = threading.Lock()
        self._hits = 0

    def _clock_now(self) -> float:
        return self._clock.now().timestamp()

    def hit(self, key: str, *, limit: int, window_seconds: float, cost: int = 1) -> RateLimitResult:
        """Count ``cost`` against ``limit`` per ``window_seconds``; raises ValueError
        for a limit or cost below 1 or a window that is not positive."""
        if limit < 1 or cost < 1 or window_seconds <= 0:
            raise ValueError("limit and cost must be >= 1 and window_seconds > 0")
        allowed, limit, remaining, reset_after = self.hit_values(key, limit, window_seconds, cost)
        # What the frozen dataclass's __init__ does, minus one object.__setattr__ per
        # field: this runs on every request.
        result: RateLimitResult = _new(RateLimitResult)
        _set_allowed(result, allowed)
        _set_limit(result, limit)
        _set_remaining(result, remaining)
        _set_reset_after(result, reset_after)
        return result

    def hit_values(
        self, key: str, limit: int, window_seconds: float, cost: int = 1
    ) -> tuple[bool, int, int, float]:
        """:meth:`hit` without its checks of the arguments (valid ones only) and without
        the result object: ``(allowed, limit, remaining, reset_after)``, the fields of
        the RateLimitResult :meth:`hit` returns."""
        lock = self._lock
        lock.acquire()  # not `with`: its __enter__/__exit__ cost twice as much
        try:
            now = self._now()
            log = self._logs.get(key)
            if log is None:
                log = self._logs[key] = _Log(window=window_seconds)
            log.window = window_seconds
            hits = log.hits
            used = log.used
            horizon = now - window_seconds
            while hits and hits[0][0] <= horizon:
                used -= hits.popleft()[1]
            allowed = used + cost <= limit
            if allowed:
                hits.append((now, cost))
                used += cost
            log.used = used
            reset_after = hits[0][0] + window_seconds - now if hits else window_seconds
            self._hits += 1
            if not self._hits % _SWEEP_EVERY:
                self._sweep(now)
        finally:
            lock.release()
        return (
            allowed,
            limit,
            limit - used if used < limit else 0,
            reset_after if reset_after > 0.0 else 0.0,
        )

    def reset(self, key: str) -> None:
        """Forget every hit of ``key``."""
        with self._lock:
            self._logs.pop(key, None)

    def _sweep(self, now: float) -> None:
        idle = [
            k
            for k, log in self._logs.items()
            if not log.hits or log.hits[-1][0] <= now - log.window
        ]
        for k in idle:
            del self._logs[k]


@dataclass(slots=True)
class _Attempts:
    count: int = 0
    locked_until: float = 0.0
    level: int = 0
    updated_at: float = 0.0


class MemoryAttemptCounter:
    """Per-account login lockout with exponential backoff, for one process.

    :meth:`acquire` reserves an attempt before the password is checked, so no more
    than ``max_failures`` verifications can be in flight or failed for a key; once
    the threshold fails, the key locks for ``lockout_seconds``, doubling with
    each further lockout up to ``max_lockout_seconds``. The backoff level decays:
    state left unlocked and untouched for 24 hours is forgotten. Thread-safe.

    Every :meth:`acquire` that returns ``allowed`` must be followed by
    :meth:`record_failure` or :meth:`record_success`, or the reservation stays
    counted until the state decays.
    """

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        max_failures: int = 10,
        lockout_seconds: float = 60.0,
        max_lockout_seconds: float = 3600.0,
    ) -> None:
        check_lockout_settings(max_failures, lockout_seconds, max_lockout_seconds)
        self._clock: Clock = clock if clock is not None else SystemClock()
        self.max_failures = max_failures
        self.lockout_seconds = lockout_seconds
        self.max_lockout_seconds = max_lockout_seconds
        self._states: dict[str, _Attempts] = {}
        self._lock = threading.Lock()
        self._calls = 0

    def _state(self, key: str, now: float) -> _Attempts:
        # Called with the lock held.
        state = self._states.get(key)
        if state is None or (state.locked_until <= now and now - state.updated_at >= _FORGET_AFTER):
            state = self._states[key] = _Attempts(updated_at=now)
        self._calls += 1
        if self._calls % _SWEEP_EVERY == 0:
            stale = [
                k
                for k, s in self._states.items()
                if s.locked_until <= now and now - s.updated_at >= _FORGET_AFTER
            ]
            for k in stale:
                del self._states[k]
        return state

    def acquire(self, key: str) -> AttemptDecision:
        """Reserve an attempt; refused while locked (``retry_after`` = the rest of the
        lock) or while ``max_failures`` attempts are reserved (``retry_after`` = 1 s)."""
        with self._lock:
            now = self._clock.now().timestamp()
            state = self._state(key, now)
            if state.locked_until > now:
                return AttemptDecision(allowed=False, retry_after=state.locked_until - now)
            if state.count >= self.max_failures:
                # refused attempts do not touch the state, so it still decays
                return AttemptDecision(allowed=False, retry_after=1.0)
            state.updated_at = now
            state.count += 1
            return AttemptDecision(allowed=True)

    def record_failure(self, key: str) -> float | None:
        """A reserved attempt failed; the lock duration in seconds if the key is now locked."""
        with self._lock:
            now = self._clock.now().timestamp()
            state = self._state(key, now)
            state.updated_at = now
            if state.count < self.max_failures:
                return None
            state.level += 1
            duration = lockout_duration(state.level, self.lockout_seconds, self.max_lockout_seconds)
            state.locked_until = now + duration
            state.count = 0
            return duration

    def record_success(self, key: str) -> None:
        """A reserved attempt succeeded: forget the failures, the lock and the backoff level."""
        with self._lock:
            self._states.pop(key, None)

    def release(self, key: str) -> None:
        """Give back one reserved attempt (the check could not run)."""
        with self._lock:
            state = self._states.get(key)
            if state is not None and state.count > 0:
                state.count -= 1

    def reset(self, key: str) -> None:
        """Forget everything about ``key``."""
        with self._lock:
            self._states.pop(key, None)
