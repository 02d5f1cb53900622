"""Health checks with the deployment guide's JSON shapes, framework-free.

Each method returns ``(status_code, body)``: 200 when healthy, 503 otherwise; the
adapters serve them as ``/health``, ``/health/db``, ``/health/redis``,
``/health/queues``, ``/health/live`` and ``/health/ready``::

    GET /health         {"status": "healthy", "timestamp": "2026-01-16T12:00:00.000Z",
                         "services": {"database": "connected", "redis": "connected"}}
    GET /health/db      {"status": "healthy", "service": "database", "responseTime": "5ms",
                         "timestamp": "..."}
    GET /health/queues  {"status": "healthy", "service": "queues",
                         "queues": {"email": "healthy", "auditArchive": "healthy"},
                         "timestamp": "..."}

A check never raises: a failing backend is reported (and logged), not propagated.
Without ``REDIS_URL`` Redis is ``"not_configured"``, which is healthy.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from usermgmt.errors import BackendError

if TYPE_CHECKING:
    from usermgmt.app import UserManagement

__all__ = [
    "AUDIT_ARCHIVE_QUEUE",
    "EMAIL_QUEUE",
    "FAILED_JOBS_THRESHOLD",
    "HealthReport",
    "HealthService",
]

logger = logging.getLogger("usermgmt.health")

HealthReport = tuple[int, dict[str, Any]]
"""``(HTTP status code, JSON body)``."""

ServiceState = Literal["connected", "disconnected", "not_configured"]

#: Queue names as the task queue knows them, by their key in the ``/health/queues`` JSON.
EMAIL_QUEUE = "email"
AUDIT_ARCHIVE_QUEUE = "audit-archive"
_QUEUES = {"email": EMAIL_QUEUE, "auditArchive": AUDIT_ARCHIVE_QUEUE}

#: A queue with at least this many jobs that failed for good is reported unhealthy.
FAILED_JOBS_THRESHOLD = 10

_HEALTH_KEY = "um:health"


def _timestamp(now: datetime) -> str:
    """ISO 8601 UTC with milliseconds and ``Z``, as the seed shows it."""
    return now.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _status(healthy: bool) -> tuple[int, str]:
    return (200, "healthy") if healthy else (503, "unhealthy")


def _timed(check: Callable[[], object], what: str) -> tuple[bool, str]:
    """Run ``check``; (succeeded, elapsed as ``"5ms"``). Failures are logged, never raised."""
    started = time.perf_counter()
    try:
        check()
    except BackendError as exc:
        logger.warning("health check failed: %s unavailable (%s)", what, exc.code)
        ok = False
    except Exception as exc:  # a health check must answer whatever the backend does
        logger.warning("health check failed: %s raised %s", what, type(exc).__name__)
        ok = False
    else:
        ok = True
    elapsed = (time.perf_counter() - started) * 1000
    return ok, f"{round(elapsed)}ms"


class HealthService:
    """The health of one :class:`~usermgmt.UserManagement`'s backends (``um.health``)."""

    def __init__(
        self, um: UserManagement, *, failed_jobs_threshold: int = FAILED_JOBS_THRESHOLD
    ) -> None:
        self._um = um
        self._failed_jobs_threshold = failed_jobs_threshold

    # --- endpoints ------------------------------------------------------------------------

    def overall(self) -> HealthReport:
        """``/health``: the database and Redis (``not_configured`` counts as healthy)."""
        database, _ = self._database()
        redis, _ = self._redis()
        code, status = _status(database == "connected" and redis != "disconnected")
        return code, {
            "status": status,
            "timestamp": self._now(),
            "services": {"database": database, "redis": redis},
        }

    def database(self) -> HealthReport:
        """``/health/db``: a round trip to the primary database, timed."""
        state, elapsed = self._database()
        return self._service("database", state == "connected", elapsed)

    def redis(self) -> HealthReport:
        """``/health/redis``: a round trip to Redis, timed; healthy when not configured."""
        state, elapsed = self._redis()
        return self._service("redis", state != "disconnected", elapsed)

    def queues(self) -> HealthReport:
        """``/health/queues``: the email and audit-archive queues."""
        queues = self._queue_states()
        code, status = _status(all(state == "healthy" for state in queues.values()))
        return code, {
            "status": status,
            "service": "queues",
            "queues": queues,
            "timestamp": self._now(),
        }

    def live(self) -> HealthReport:
        """``/health/live``: the process answers (no backend is touched)."""
        return 200, {"status": "healthy", "timestamp": self._now()}

    def ready(self) -> HealthReport:
        """``/health/ready``: the database is reachable, so requests can be served."""
        state, _ = self._database()
        code, status = _status(state == "connected")
        return code, {"status": status, "timestamp": self._now(), "services": {"database": state}}

    # --- checks ---------------------------------------------------------------------------

    def _now(self) -> str:
        return _timestamp(self._um.clock.now())

    def _service(self, name: str, healthy: bool, elapsed: str) -> HealthReport:
        code, status = _status(healthy)
        return code, {
            "status": status,
            "service": name,
            "responseTime": elapsed,
            "timestamp": self._now(),
        }

    def _database(self) -> tuple[ServiceState, str]:
        ok, elapsed = _timed(self._um.backends.uow.check, "database")
        return ("connected" if ok else "disconnected"), elapsed

    def _redis(self) -> tuple[ServiceState, str]:
        cache = self._um.backends.cache
        if not self._um.settings.redis_url or cache is None:
            return "not_configured", "0ms"
        ping = getattr(cache, "ping", None)
        probe: Callable[[], object] = ping if callable(ping) else lambda: cache.get(_HEALTH_KEY)
        ok, elapsed = _timed(probe, "redis")
        return ("connected" if ok else "disconnected"), elapsed

    def _queue_states(self) -> dict[str, str]:
        queue = self._um.backends.queue
        # A queue backend may answer for itself: ``health() -> {queue name: healthy?}``.
        report = getattr(queue, "health", None)
        if callable(report):
            try:
                answers: Mapping[str, object] = report()
            except Exception as exc:  # a health check must answer whatever the backend does
                logger.warning("queue health check raised %s", type(exc).__name__)
                answers = {}
            return {key: _healthy(answers.get(name) is True) for key, name in _QUEUES.items()}
        failed = getattr(queue, "failed", None)
        counts: dict[str, int] = dict.fromkeys(_QUEUES.values(), 0)
        for job in failed if isinstance(failed, list) else []:
            name = getattr(job, "queue", None)
            if name in counts:
                counts[name] += 1
        return {
            key: _healthy(counts[name] < self._failed_jobs_threshold)
            for key, name in _QUEUES.items()
        }


def _healthy(ok: bool) -> str:
    return "healthy" if ok else "unhealthy"
