"""What happens when Redis fails (SECURITY.md §4A, F1-F5): wrappers around the Redis
backends that never fail open, plus the degradation log and counters.

=====================  ===========================================================
Port                   When Redis raises (down, paused, too slow, out of memory…)
=====================  ===========================================================
RateLimiter      (F1)  ``fallback`` mode: the same limit, divided by ``strictness``
                       (4; at least 1), counted in this process. ``closed`` mode:
                       BackendUnavailable (the adapters answer 503). Never unlimited.
AttemptCounter   (F1)  the lockout is counted in this process with the same
                       thresholds (``closed`` mode: :meth:`acquire` raises). A
                       failure is never lost: it is counted locally instead.
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

Component = Literal["ratelimit", "lockout", "revocation", "cache"]
FailureMode = Literal["fallback", "closed"]

#: The degradable components and what each one does instead.
COMPONENTS: dict[str, str] = {
    "ratelimit": "a stricter in-process limit applies",
    "lockout": "the lockout is counted in this process",
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
                "%s: Redis unavailable (%s); %s%s",
                event,
                type(cause).__name__,
                COMPONENTS.get(component, "degraded"),
                f" ({suppressed} more failures since the last warning)" if suppressed else "",
                extra={"event": event, "component": component},
            )
        if _hooks is not None:
            _hooks.count_degradation("redis", component)
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
            "%s: Redis answers again", event, extra={"event": event, "component": component}
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


class FailoverAttemptCounter:
    """The shared lockout counter, or an in-process one when it fails (F1).

    Reservations taken by the in-process counter while Redis failed are answered there
    (so a flapping Redis never strands them); a failure whose reservation was taken by
    Redis but cannot be recorded there is counted in-process instead. Nothing is ever
    allowed without being counted somewhere. ``closed`` mode refuses new attempts
    (BackendUnavailable from :meth:`acquire`) but still records the answers.
    """

    def __init__(
        self,
        primary: AttemptCounter,
        fallback: AttemptCounter,
        *,
        mode: FailureMode = "fallback",
        monitor: DegradationMonitor = monitor,
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self.mode = mode
        self._monitor = monitor
        self._local: Counter[str] = Counter()  # reservations held by the fallback, per key
        self._lock = threading.Lock()

    def _take_local(self, key: str) -> bool:
        """Consume one local reservation of ``key`` if there is one."""
        if not self._local:
            return False
        with self._lock:
            if self._local[key] > 0:
                self._local[key] -= 1
                if self._local[key] == 0:
                    del self._local[key]
                return True
            self._local.pop(key, None)
            return False

    def acquire(self, key: str) -> AttemptDecision:
        try:
            decision = self.primary.acquire(key)
        except BackendUnavailable as exc:
            self._monitor.failed("lockout", exc)
            if self.mode == "closed":
                raise
            decision = self.fallback.acquire(key)
            if decision.allowed:
                with self._lock:
                    self._local[key] += 1
            return decision
        self._monitor.succeeded("lockout")
        return decision

    def record_failure(self, key: str) -> float | None:
        if self._take_local(key):
            return self.fallback.record_failure(key)
        try:
            locked = self.primary.record_failure(key)
        except BackendUnavailable as exc:
            self._monitor.failed("lockout", exc)
            # the reservation is stuck in Redis: count this failure here instead
            if self.fallback.acquire(key).allowed:
                return self.fallback.record_failure(key)
            return None
        self._monitor.succeeded("lockout")
        return locked

    def record_success(self, key: str) -> None:
        with self._lock:
            self._local.pop(key, None)
        self.fallback.record_success(key)
        try:
            self.primary.record_success(key)
        except BackendUnavailable as exc:
            self._monitor.failed("lockout", exc)
            return
        self._monitor.succeeded("lockout")

    def release(self, key: str) -> None:
        if self._take_local(key):
            self.fallback.release(key)
            return
        try:
            self.primary.release(key)
        except BackendUnavailable as exc:
            self._monitor.failed("lockout", exc)
            return
        self._monitor.succeeded("lockout")

    def reset(self, key: str) -> None:
        with self._lock:
            self._local.pop(key, None)
        self.fallback.reset(key)
        try:
            self.primary.reset(key)
        except BackendUnavailable as exc:
            self._monitor.failed("lockout", exc)
            return
        self._monitor.succeeded("lockout")
