"""What happens when Redis fails (SECURITY.md §4A, F1-F5): wrappers around the Redis
backends that never fail open, plus the degradation log and counters.

=====================  ===========================================================
Port                   When Redis raises (down, paused, too slow, out of memory…)
=====================  ===========================================================
RateLimiter      (F1)  ``fallback`` mode: the same limit, divided by ``strictness``
                       (4; at least 1), counted in this process. ``closed`` mode:
                       BackendUnavailable (the adapters answer 503). Never unlimited.
AttemptCounter   (F1)  the lockout is counted in the SQL database (the shared
                       backstop, when the database is SQL), else in this process,
                       with the same thresholds (``closed`` mode: only the backstop,
                       else :meth:`acquire` raises). A failure is never lost: it is
                       counted in the next store instead.
RevocationStore  (F2)  BackendUnavailable: the services ask the database, which is
                       the source of truth; never "not revoked". Revocations that
                       could not be written are remembered here and retried.
Cache            (F4)  BackendUnavailable: the permission checks read the database.
=====================  ===========================================================

F5 (Redis slow or hung) is the connection's job: short socket timeouts, no retries and a
circuit breaker (:mod:`usermgmt.backends.redis.client`) turn it into the cases above
within one timeout.

Every degradation is counted (:data:`degradations`, the metrics hook
``usermgmt.observability.hooks.count_degradation("redis", component)``, and any listener
registered with :func:`register_degradation_listener`) and logged on
the ``usermgmt.redis`` logger: a warning such as ``ratelimit_backend_down`` when a
component starts failing (then at most every 30 seconds while it keeps failing, with
the number of failures), and ``ratelimit_backend_recovered`` at info level when it
answers again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Literal
from uuid import UUID

from usermgmt.errors import BackendUnavailable

try:  # metrics: the observability hooks (standard library only), when present
    from usermgmt.observability import hooks as _hooks
except ImportError:  # pragma: no cover - an install without the observability package
    _hooks = None  # type: ignore[assignment]
from usermgmt.ports import (
    AttemptCounter,
    AttemptDecision,
    Cache,
    RateLimiter,
    RateLimitResult,
    RevocationStore,
)

__all__ = [
    "COMPONENTS",
    "DegradationMonitor",
    "FailoverAttemptCounter",
    "FailoverCache",
    "FailoverRateLimiter",
    "FailoverRevocationStore",
    "degradations",
    "monitor",
    "register_degradation_listener",
]

logger = logging.getLogger("usermgmt.redis")

#: Components that are not Redis calls: the backend named in their logs and metrics.
_BACKENDS: dict[str, tuple[str, str]] = {"lockout_backstop": ("database", "database")}
_REDIS = ("redis", "Redis")

Component = Literal["ratelimit", "lockout", "lockout_backstop", "revocation", "cache"]
FailureMode = Literal["fallback", "closed"]

#: The degradable components and what each one does instead.
COMPONENTS: dict[str, str] = {
    "ratelimit": "a stricter in-process limit applies",
    "lockout": "the lockout is counted in the database backstop, else in this process",
    "lockout_backstop": "the lockout is counted in this process",
    "revocation": "revocation checks read the database",
    "cache": "permission checks read the database",
}

#: ``listener(event, component)``; ``event`` is ``<component>_backend_down`` or ``_recovered``.
DegradationListener = Callable[[str, str], None]

_LOG_EVERY_SECONDS = 30.0


class DegradationMonitor:
    """Counts and logs degradations; thread-safe. One per process (:data:`monitor`).

    ``counts[event]`` counts every failed call per event (``ratelimit_backend_down``…);
    listeners get every event, including the ``…_recovered`` ones.
    """

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._listeners: list[DegradationListener] = []
        self._degraded: dict[str, float] = {}  # component -> monotonic time of the last log
        self._suppressed: Counter[str] = Counter()
        self._lock = threading.Lock()

    def register(self, listener: DegradationListener) -> Callable[[], None]:
        """Call ``listener(event, component)`` on every degradation event; returns an
        unregister function."""
        with self._lock:
            self._listeners.append(listener)

        def unregister() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unregister

    def is_degraded(self, component: str) -> bool:
        """True from a component's failure until its next successful call."""
        return component in self._degraded

    def degraded_components(self) -> list[str]:
        return sorted(self._degraded)

    def snapshot(self) -> dict[str, int]:
        """A copy of the counts."""
        with self._lock:
            return dict(self.counts)

    def failed(self, component: str, error: BaseException) -> None:
        """A call of ``component`` failed and its fallback is taken."""
        event = f"{component}_backend_down"
        now = time.monotonic()
        with self._lock:
            self.counts[event] += 1
            last = self._degraded.get(component)
            log = last is None or now - last >= _LOG_EVERY_SECONDS
            if log:
                self._degraded[component] = now
                suppressed = self._suppressed.pop(component, 0)
            else:
                self._suppressed[component] += 1
                suppressed = 0
            listeners = list(self._listeners)
        if log:
            cause = error.__cause__ or error
            logger.warning(
                "%s: %s unavailable (%s); %s%s",
                event,
                _BACKENDS.get(component, _REDIS)[1],
                type(cause).__name__,
                COMPONENTS.get(component, "degraded"),
                f" ({suppressed} more failures since the last warning)" if suppressed else "",
                extra={"event": event, "component": component},
            )
        if _hooks is not None:
            _hooks.count_degradation(_BACKENDS.get(component, _REDIS)[0], component)
        self._notify(listeners, event, component)

    def succeeded(self, component: str) -> None:
        """A call of ``component`` reached Redis again (cheap when nothing was degraded)."""
        if component not in self._degraded:
            return
        with self._lock:
            if self._degraded.pop(component, None) is None:
                return
            self._suppressed.pop(component, None)
            listeners = list(self._listeners)
        event = f"{component}_backend_recovered"
        logger.info(
            "%s: %s answers again",
            event,
            _BACKENDS.get(component, _REDIS)[1],
            extra={"event": event, "component": component},
        )
        self._notify(listeners, event, component)

    def clear(self) -> None:
        """Forget counts and state (tests); listeners stay."""
        with self._lock:
            self.counts.clear()
            self._degraded.clear()
            self._suppressed.clear()

    @staticmethod
    def _notify(listeners: Sequence[DegradationListener], event: str, component: str) -> None:
        for listener in listeners:
            try:
                listener(event, component)
            except Exception:  # a broken metrics hook must not break a request
                logger.exception("degradation listener failed")


#: The process-wide monitor the Redis backends report to.
monitor = DegradationMonitor()

#: Failed calls per event (``ratelimit_backend_down``…), for this process.
degradations: Counter[str] = monitor.counts


def register_degradation_listener(listener: DegradationListener) -> Callable[[], None]:
    """Call ``listener(event, component)`` on every Redis degradation event (metrics hook)."""
    return monitor.register(listener)


# --- cache (F4) --------------------------------------------------------------------------------


class FailoverCache:
    """Reports cache failures and raises them: the services then read the database."""

    def __init__(self, primary: Cache, *, monitor: DegradationMonitor = monitor) -> None:
        self.primary = primary
        self._monitor = monitor

    def _failed(self, exc: BackendUnavailable) -> None:
        self._monitor.failed("cache", exc)

    def get(self, key: str) -> str | None:
        try:
            value = self.primary.get(key)
        except BackendUnavailable as exc:
            self._failed(exc)
            raise
        self._monitor.succeeded("cache")
        return value

    def get_many(self, keys: Sequence[str]) -> list[str | None]:
        try:
            values = self.primary.get_many(keys)
        except BackendUnavailable as exc:
            self._failed(exc)
            raise
        self._monitor.succeeded("cache")
        return values

    def set(self, key: str, value: str, ttl: float | None = None) -> None:
        try:
            self.primary.set(key, value, ttl)
        except BackendUnavailable as exc:
            self._failed(exc)
            raise
        self._monitor.succeeded("cache")

    def delete(self, *keys: str) -> None:
        try:
            self.primary.delete(*keys)
        except BackendUnavailable as exc:
            self._failed(exc)
            raise
        self._monitor.succeeded("cache")

    def incr(self, key: str, ttl: float | None = None) -> int:
        try:
            value = self.primary.incr(key, ttl)
        except BackendUnavailable as exc:
            self._failed(exc)
            raise
        self._monitor.succeeded("cache")
        return value

    def pop(self, key: str) -> str | None:
        try:
            value = self.primary.pop(key)
        except BackendUnavailable as exc:
            self._failed(exc)
            raise
        self._monitor.succeeded("cache")
        return value

    def ping(self) -> None:
        """A real round trip to Redis (health checks), even while the breaker is open."""
        ping = getattr(self.primary, "ping", None)
        if callable(ping):
            ping()
        else:
            self.primary.get("health")


# --- revocation (F2) ----------------------------------------------------------------------------

_PENDING_LIMIT = 100_000


class FailoverRevocationStore:
    """Reports failures and raises them, so the services ask the database (F2).

    A revocation that could not be written is remembered in this process (this
    process answers "revoked" for it without Redis) and written again on a later call,
    so once Redis is back the other processes see it too.
    """

    def __init__(self, primary: RevocationStore, *, monitor: DegradationMonitor = monitor) -> None:
        self.primary = primary
        self._monitor = monitor
        self._pending: dict[UUID, float] = {}  # session id -> monotonic expiry
        self._lock = threading.Lock()

    def revoke(self, session_ids: Iterable[UUID], ttl_seconds: float) -> None:
        ids = list(session_ids)
        try:
            self.primary.revoke(ids, ttl_seconds)
        except BackendUnavailable as exc:
            self._monitor.failed("revocation", exc)
            self._remember(ids, ttl_seconds)
            raise
        self._monitor.succeeded("revocation")

    def is_revoked(self, session_id: UUID) -> bool:
        if self._pending:
            self._flush()
            expires = self._pending.get(session_id)
            if expires is not None and expires > time.monotonic():
                return True  # written nowhere yet, but revoked: no need to ask anyone
        try:
            revoked = self.primary.is_revoked(session_id)
        except BackendUnavailable as exc:
            self._monitor.failed("revocation", exc)
            raise
        self._monitor.succeeded("revocation")
        return revoked

    @property
    def pending(self) -> int:
        """Revocations waiting to be written to Redis."""
        return len(self._pending)

    def _remember(self, ids: list[UUID], ttl_seconds: float) -> None:
        until = time.monotonic() + ttl_seconds
        with self._lock:
            if len(self._pending) + len(ids) > _PENDING_LIMIT:
                self._drop_expired()
            for session_id in ids[: max(0, _PENDING_LIMIT - len(self._pending))]:
                if self._pending.get(session_id, 0.0) < until:
                    self._pending[session_id] = until

    def _drop_expired(self) -> None:
        now = time.monotonic()
        for session_id in [s for s, until in self._pending.items() if until <= now]:
            del self._pending[session_id]

    def _flush(self) -> None:
        with self._lock:
            self._drop_expired()
            batches: dict[int, list[UUID]] = {}
            now = time.monotonic()
            for session_id, until in self._pending.items():
                batches.setdefault(max(1, int(until - now)), []).append(session_id)
        for ttl, ids in batches.items():
            try:
                self.primary.revoke(ids, ttl)
            except BackendUnavailable:
                return  # still down: keep them for the next call
            with self._lock:
                for session_id in ids:
                    self._pending.pop(session_id, None)
        self._monitor.succeeded("revocation")


# --- rate limiting (F1) -------------------------------------------------------------------------


class FailoverRateLimiter:
    """The shared limiter, or a stricter in-process one when it fails (F1).

    ``fallback`` mode: ``limit // strictness`` (at least 1) per window, counted by
    ``fallback`` (a :class:`~usermgmt.backends.memory.MemoryRateLimiter`) in this
    process; the result reports that stricter limit. ``closed`` mode: raise
    BackendUnavailable (503). Never unlimited.
    """

    def __init__(
        self,
        primary: RateLimiter,
        fallback: RateLimiter,
        *,
        strictness: int = 4,
        mode: FailureMode = "fallback",
        monitor: DegradationMonitor = monitor,
    ) -> None:
        if strictness < 1:
            raise ValueError("strictness must be >= 1")
        self.primary = primary
        self.fallback = fallback
        self.strictness = strictness
        self.mode = mode
        self._monitor = monitor

    def fallback_limit(self, limit: int) -> int:
        """The in-process limit that replaces ``limit`` while Redis fails."""
        return max(1, limit // self.strictness)

    def hit(self, key: str, *, limit: int, window_seconds: float, cost: int = 1) -> RateLimitResult:
        try:
            result = self.primary.hit(key, limit=limit, window_seconds=window_seconds, cost=cost)
        except BackendUnavailable as exc:
            self._monitor.failed("ratelimit", exc)
            if self.mode == "closed":
                raise
            return self.fallback.hit(
                key, limit=self.fallback_limit(limit), window_seconds=window_seconds, cost=cost
            )
        self._monitor.succeeded("ratelimit")
        return result

    def reset(self, key: str) -> None:
        self.fallback.reset(key)
        try:
            self.primary.reset(key)
        except BackendUnavailable as exc:
            self._monitor.failed("ratelimit", exc)


# --- lockout (F1) -------------------------------------------------------------------------------

#: How long after its last use by this process a success still clears the backstop (the
#: backstop forgets an untouched state after as long).
_BACKSTOP_MEMORY_SECONDS = 24 * 3600.0


class FailoverAttemptCounter:
    """The shared lockout counter; while it fails, the SQL backstop; while that fails
    too, an in-process counter (F1). Never unlimited.

    ``primary`` is Redis, ``backstop`` (optional: deployments on a SQL database) the
    :class:`~usermgmt.backends.sqlalchemy.attempts.SqlAttemptCounter` every process on
    the database shares, ``fallback`` the in-process counter. While Redis fails, the
    processes therefore keep counting one lockout per account together; only if the
    database fails as well does each count alone.

    Reservations taken by a lower store while Redis failed are answered there (so a
    flapping Redis never strands them); a failure whose reservation cannot be recorded
    where it was taken is counted in the next store instead. Nothing is ever allowed
    without being counted somewhere. ``closed`` mode never counts new attempts in this
    process alone: while Redis fails the backstop serves them, and without one (or when
    it fails too) :meth:`acquire` raises BackendUnavailable; answers are still recorded.

    A success clears every store, but the backstop only when this process counted in it
    during the last day (its decay period), so a success while Redis answers costs no SQL
    statement. A state another process left in the backstop then stays until it decays:
    stricter during the next outage, never looser.

    When Redis answers again, a lock taken in the backstop during the outage still holds:
    while such a lock may last (``max_lockout_seconds`` after this process last counted
    in the backstop), an attempt Redis allows is also checked against the backstop's lock
    (one ``SELECT``) and refused, its Redis reservation given back, while that lock runs.
    Failures below the threshold counted in the backstop are not carried over to Redis.
    """

    def __init__(
        self,
        primary: AttemptCounter,
        fallback: AttemptCounter,
        *,
        backstop: AttemptCounter | None = None,
        mode: FailureMode = "fallback",
        monitor: DegradationMonitor = monitor,
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self.backstop = backstop
        self.mode = mode
        self._monitor = monitor
        self._local: Counter[str] = Counter()  # reservations held by the fallback, per key
        self._shared: Counter[str] = Counter()  # reservations held by the backstop, per key
        self._lock = threading.Lock()
        self._backstop_used: float | None = None  # monotonic time of its last use here

    def _take(self, held: Counter[str], key: str) -> bool:
        """Consume one reservation of ``key`` from ``held`` if there is one."""
        if not held:
            return False
        with self._lock:
            if held[key] > 0:
                held[key] -= 1
                if held[key] == 0:
                    del held[key]
                return True
            held.pop(key, None)
            return False

    def _hold(self, held: Counter[str], key: str) -> None:
        with self._lock:
            held[key] += 1

    def _forget(self, key: str) -> None:
        with self._lock:
            self._local.pop(key, None)
            self._shared.pop(key, None)

    def _backstop_failed(self, exc: BackendUnavailable) -> None:
        self._monitor.failed("lockout_backstop", exc)

    def _backstop_answered(self) -> None:
        self._backstop_used = time.monotonic()
        self._monitor.succeeded("lockout_backstop")

    def acquire(self, key: str) -> AttemptDecision:
        try:
            decision = self.primary.acquire(key)
        except BackendUnavailable as exc:
            self._monitor.failed("lockout", exc)
            return self._acquire_below(key, exc)
        self._monitor.succeeded("lockout")
        if decision.allowed and self._backstop_may_hold_a_lock():
            locked_for = self._backstop_lock(key)
            if locked_for > 0.0:
                try:  # give the Redis reservation back: nothing was checked
                    self.primary.release(key)
                except BackendUnavailable as exc:
                    self._monitor.failed("lockout", exc)  # stays counted: stricter
                return AttemptDecision(allowed=False, retry_after=locked_for)
        return decision

    def _backstop_may_hold_a_lock(self) -> bool:
        """True while a lock this process took in the backstop may last (its longest lock
        after its last use here): Redis never saw those failures."""
        used = self._backstop_used
        if used is None or self.backstop is None:
            return False
        longest = getattr(self.backstop, "max_lockout_seconds", _BACKSTOP_MEMORY_SECONDS)
        return time.monotonic() - used < float(longest)

    def _backstop_lock(self, key: str) -> float:
        """The rest of ``key``'s lock in the backstop (0.0: none, or the backstop cannot
        say; Redis answered, so its answer stands). Does not extend the window above."""
        locked_for = getattr(self.backstop, "locked_for", None)
        if not callable(locked_for):
            return 0.0
        try:
            remaining = float(locked_for(key))
        except BackendUnavailable as exc:
            self._backstop_failed(exc)
            return 0.0
        self._monitor.succeeded("lockout_backstop")
        return remaining

    def _acquire_below(self, key: str, error: BackendUnavailable) -> AttemptDecision:
        if self.backstop is not None:
            try:
                decision = self.backstop.acquire(key)
            except BackendUnavailable as exc:
                self._backstop_failed(exc)
                error = exc
            else:
                self._backstop_answered()
                if decision.allowed:
                    self._hold(self._shared, key)
                return decision
        if self.mode == "closed":
            raise error
        decision = self.fallback.acquire(key)
        if decision.allowed:
            self._hold(self._local, key)
        return decision

    def record_failure(self, key: str) -> float | None:
        if self._take(self._local, key):
            return self.fallback.record_failure(key)
        if self.backstop is not None and self._take(self._shared, key):
            try:
                locked = self.backstop.record_failure(key)
            except BackendUnavailable as exc:
                self._backstop_failed(exc)
                return self._count_locally(key)  # the reservation is stuck in the database
            self._backstop_answered()
            return locked
        try:
            locked = self.primary.record_failure(key)
        except BackendUnavailable as exc:
            self._monitor.failed("lockout", exc)
            return self._count_below(key)  # the reservation is stuck in Redis
        self._monitor.succeeded("lockout")
        return locked

    def _count_below(self, key: str) -> float | None:
        """Count a failure whose reservation Redis holds in the backstop, else locally."""
        if self.backstop is not None:
            try:
                locked = (
                    self.backstop.record_failure(key)
                    if self.backstop.acquire(key).allowed
                    else None  # locked or full there already
                )
            except BackendUnavailable as exc:
                self._backstop_failed(exc)
            else:
                self._backstop_answered()
                return locked
        return self._count_locally(key)

    def _count_locally(self, key: str) -> float | None:
        if self.fallback.acquire(key).allowed:
            return self.fallback.record_failure(key)
        return None

    def record_success(self, key: str) -> None:
        self._forget(key)
        self.fallback.record_success(key)
        used = self._backstop_used
        if (
            self.backstop is not None
            and used is not None
            and time.monotonic() - used < _BACKSTOP_MEMORY_SECONDS
        ):
            try:
                self.backstop.record_success(key)
            except BackendUnavailable as exc:
                self._backstop_failed(exc)
        try:
            self.primary.record_success(key)
        except BackendUnavailable as exc:
            self._monitor.failed("lockout", exc)
            return
        self._monitor.succeeded("lockout")

    def release(self, key: str) -> None:
        if self._take(self._local, key):
            self.fallback.release(key)
            return
        if self.backstop is not None and self._take(self._shared, key):
            try:
                self.backstop.release(key)
            except BackendUnavailable as exc:
                self._backstop_failed(exc)
            return
        try:
            self.primary.release(key)
        except BackendUnavailable as exc:
            self._monitor.failed("lockout", exc)
            return
        self._monitor.succeeded("lockout")

    def reset(self, key: str) -> None:
        self._forget(key)
        self.fallback.reset(key)
        if self.backstop is not None:
            try:
                self.backstop.reset(key)
            except BackendUnavailable as exc:
                self._backstop_failed(exc)
        try:
            self.primary.reset(key)
        except BackendUnavailable as exc:
            self._monitor.failed("lockout", exc)
            return
        self._monitor.succeeded("lockout")
