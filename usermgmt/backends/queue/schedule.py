"""``usermgmt schedule``: puts the daily audit archive on the ``audit-archive`` queue.

Each UTC day, once ``SCHEDULE_AUDIT_ARCHIVE_AT`` (``HH:MM``, default ``03:00``) has
passed, the scheduler queues the task ``audit.archive`` (payload ``{}``) under the job
id ``audit-archive-YYYY-MM-DD``; a worker serving ``audit-archive`` runs it, with the
retries, failed registry, health and metrics of any job.

**Never twice.** Before queueing, the scheduler takes the day's lock in Redis
(``SET um:schedule:audit.archive:YYYY-MM-DD <owner> NX EX 172800``): however many
schedulers run (one per host, a cron line on two machines), one queues the day's run
and the others see the lock and do nothing; the job id is unique as well. A scheduler
started late (after a deploy or an outage) queues the day's run at once if nobody has.

Modes: a long-running process (``usermgmt schedule``, a systemd unit or a Kubernetes
Deployment; it checks every minute and stops at once on SIGTERM, exit 0), or one shot
for cron (``usermgmt schedule --once``: queue today's run unless queued, then exit).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from types import FrameType
from typing import TYPE_CHECKING

from usermgmt.backends.queue import AUDIT_ARCHIVE_QUEUE, AUDIT_ARCHIVE_TASK
from usermgmt.errors import BackendUnavailable

if TYPE_CHECKING:
    from usermgmt.backends.queue.rq import RQQueue

__all__ = ["LOCK_KEY", "Scheduler", "archive_job_id", "parse_time"]

logger = logging.getLogger("usermgmt.schedule")

#: ``LOCK_KEY.format(day)``: taken by the scheduler that queues that day's archive.
LOCK_KEY = "um:schedule:audit.archive:{}"
LOCK_TTL_SECONDS = 2 * 86400
#: The longest the long-running scheduler sleeps between two checks.
CHECK_INTERVAL_SECONDS = 60.0


def archive_job_id(day: date) -> str:
    """The job id of ``day``'s archive run."""
    return f"audit-archive-{day.isoformat()}"


def parse_time(text: str) -> time:
    """``"HH:MM"`` → a UTC time of day (ValueError otherwise)."""
    hours, _, minutes = text.partition(":")
    return time(int(hours), int(minutes), tzinfo=UTC)


class Scheduler:
    """Queues each day's audit archive once (see the module docstring)."""

    def __init__(
        self,
        queue: RQQueue,
        at: time,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.queue = queue
        self.at = at
        self.now = now
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.stop_event = threading.Event()

    def slot(self, day: date) -> datetime:
        """When ``day``'s run is due."""
        return datetime.combine(day, self.at.replace(tzinfo=None), UTC)

    def run_day(self, day: date) -> bool:
        """Queue ``day``'s archive unless another scheduler did; True if this one did.
        Raises BackendUnavailable when Redis fails (the lock is then released)."""
        key = LOCK_KEY.format(day.isoformat())
        client = self.queue.client
        try:
            taken = client.set(key, self.owner, nx=True, ex=LOCK_TTL_SECONDS)
        except Exception as exc:
            raise BackendUnavailable(
                f"cannot take the schedule lock on {self.queue.description}"
            ) from exc
        if not taken:
            logger.debug("the audit archive of %s is already queued", day)
            return False
        try:
            queued = self.queue.enqueue_once(
                AUDIT_ARCHIVE_TASK, {}, queue=AUDIT_ARCHIVE_QUEUE, job_id=archive_job_id(day)
            )
        except Exception:
            try:  # let the next check (here or elsewhere) try again
                client.delete(key)
            except Exception as exc:
                logger.warning("schedule lock %s not released: %s", key, type(exc).__name__)
            raise
        if queued:
            logger.info("queued the audit archive of %s (job %s)", day, archive_job_id(day))
        return queued

    def due_day(self) -> date | None:
        """Today (UTC) once its slot has passed, else None."""
        current = self.now()
        return current.date() if current >= self.slot(current.date()) else None

    def seconds_to_next_check(self) -> float:
        current = self.now()
        slot = self.slot(current.date())
        if current >= slot:
            slot = self.slot(current.date() + timedelta(days=1))
        return max(0.5, min(CHECK_INTERVAL_SECONDS, (slot - current).total_seconds()))

    def run_forever(self) -> None:
        """Check until :meth:`stop` (or SIGTERM/SIGINT when installed); Redis errors are
        logged and retried at the next check."""
        logger.info(
            "scheduler %s: the audit archive runs daily at %s UTC",
            self.owner,
            self.at.strftime("%H:%M"),
        )
        while not self.stop_event.is_set():
            day = self.due_day()
            if day is not None:
                try:
                    self.run_day(day)
                except BackendUnavailable as exc:
                    logger.warning("scheduler: %s (%s)", exc.detail, type(exc.__cause__).__name__)
            self.stop_event.wait(self.seconds_to_next_check())
        logger.info("scheduler %s stopped", self.owner)

    def stop(self) -> None:
        self.stop_event.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT stop :meth:`run_forever` at once (nothing is half-done)."""

        def handler(signum: int, frame: FrameType | None) -> None:
            self.stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
