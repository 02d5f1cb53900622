"""Clocks: the system clock and a controllable fake one for tests."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta


class SystemClock:
    """The real time, UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class FakeClock:
    """A clock that only moves when told to; thread-safe.

    >>> clock = FakeClock()
    >>> clock.advance(seconds=61)
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
        if self._now.tzinfo is None:
            raise ValueError("FakeClock needs a timezone-aware start time")
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta | None = None, *, seconds: float = 0.0) -> datetime:
        """Move forward by ``delta`` and/or ``seconds``; returns the new time."""
        step = (delta or timedelta()) + timedelta(seconds=seconds)
        if step < timedelta():
            raise ValueError("a FakeClock never goes backwards")
        with self._lock:
            self._now += step
            return self._now

    def set(self, when: datetime) -> None:
        """Jump forward to ``when`` (timezone-aware, not earlier than now)."""
        if when.tzinfo is None:
            raise ValueError("FakeClock needs timezone-aware times")
        with self._lock:
            if when < self._now:
                raise ValueError("a FakeClock never goes backwards")
            self._now = when
