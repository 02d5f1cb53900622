"""An in-process :class:`~usermgmt.ports.Cache`."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from usermgmt.clock import SystemClock
from usermgmt.ports import Clock

__all__ = ["MemoryCache"]

_SWEEP_EVERY = 1024  # writes between two sweeps of expired entries


class MemoryCache:
    """A thread-safe string cache with per-key TTLs, for one process.

    Expiry follows the injected ``clock`` (default :class:`~usermgmt.clock.SystemClock`),
    so tests can expire entries with a :class:`~usermgmt.clock.FakeClock`.

    Each entry is one immutable ``(value, expires_at)`` tuple: replacing it is a
    single dict store, so :meth:`get` reads without taking the lock (a dict
    lookup and a float comparison) and never sees a half-written entry. Writes
    take the lock, which also makes :meth:`incr` atomic. Expired entries are
    dropped when read and swept every few thousand writes.
    """

    #: Only this process sees it: with a database in this process too, permission
    #: checks read the database directly instead (AuthorizationService).
    process_local = True

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._system_time = type(self._clock) is SystemClock
        self._data: dict[str, tuple[str, float | None]] = {}
        self._lock = threading.Lock()
        self._writes = 0

    def _now(self) -> float:
        if self._system_time:
            return time.time()  # same instant as SystemClock, without building a datetime
        return self._clock.now().timestamp()

    def get(self, key: str) -> str | None:
        """The value, or None if absent or expired."""
        entry = self._data.get(key)
        if entry is None:
            return None
        value, expires_at = entry
        if expires_at is not None and expires_at <= self._now():
            self._drop_if_same(key, entry)
            return None
        return value

    def get_many(self, keys: Sequence[str]) -> list[str | None]:
        """The values of ``keys``, in order, None where absent or expired."""
        data = self._data
        now: float | None = None
        values: list[str | None] = []
        for key in keys:
            entry = data.get(key)
            if entry is not None and entry[1] is not None:
                if now is None:
                    now = self._now()
                if entry[1] <= now:
                    self._drop_if_same(key, entry)
                    entry = None
            values.append(None if entry is None else entry[0])
        return values

    def set(self, key: str, value: str, ttl: float | None = None) -> None:
        """Store ``value`` for ``ttl`` seconds (forever when None; expired at once when <= 0)."""
        expires_at = None if ttl is None else self._now() + ttl
        with self._lock:
            self._data[key] = (value, expires_at)
            self._after_write()

    def delete(self, *keys: str) -> None:
        """Remove the keys; absent ones are ignored."""
        with self._lock:
            for key in keys:
                self._data.pop(key, None)

    def incr(self, key: str, ttl: float | None = None) -> int:
        """Atomically add one and return the new value. A missing or expired key
        counts from 0 and gets ``ttl``; an existing one keeps its expiry.
        Raises ValueError if the stored value is not an integer."""
        with self._lock:
            now = self._now()
            entry = self._data.get(key)
            if entry is None or (entry[1] is not None and entry[1] <= now):
                value, expires_at = 1, (None if ttl is None else now + ttl)
            else:
                value, expires_at = int(entry[0]) + 1, entry[1]
            self._data[key] = (str(value), expires_at)
            self._after_write()
            return value

    def pop(self, key: str) -> str | None:
        """Atomically read and delete: the value (None if absent or expired); of
        concurrent callers only one gets it."""
        with self._lock:
            entry = self._data.pop(key, None)
        if entry is None:
            return None
        value, expires_at = entry
        if expires_at is not None and expires_at <= self._now():
            return None
        return value

    def clear(self) -> None:
        """Remove every entry."""
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        """The number of stored entries, expired ones not yet swept included."""
        return len(self._data)

    def _drop_if_same(self, key: str, entry: tuple[str, float | None]) -> None:
        with self._lock:
            if self._data.get(key) is entry:
                del self._data[key]

    def _after_write(self) -> None:
        # Called with the lock held.
        self._writes += 1
        if self._writes % _SWEEP_EVERY == 0:
            now = self._now()
            expired = [k for k, (_, exp) in self._data.items() if exp is not None and exp <= now]
            for k in expired:
                del self._data[k]
