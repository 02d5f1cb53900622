"""An in-process :class:`~usermgmt.ports.RevocationStore`."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from uuid import UUID

from usermgmt.clock import SystemClock
from usermgmt.ports import Clock

__all__ = ["MemoryRevocationStore"]

_SWEEP_EVERY = 256


class MemoryRevocationStore:
    """Revoked session ids with an expiry, for one process.

    :meth:`is_revoked` is on the path of every authenticated request: it is one
    dict lookup and a comparison, without the lock (entries are plain floats, so
    a concurrent write is either seen whole or not at all). It never raises:
    this store cannot be unreachable.
    """

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._expires: dict[UUID, float] = {}
        self._lock = threading.Lock()
        self._writes = 0

    def revoke(self, session_ids: Iterable[UUID], ttl_seconds: float) -> None:
        """Remember the ids as revoked for ``ttl_seconds`` (an existing longer entry is kept)."""
        with self._lock:
            now = self._clock.now().timestamp()
            until = now + ttl_seconds
            for session_id in session_ids:
                if self._expires.get(session_id, until) <= until:
                    self._expires[session_id] = until
            self._writes += 1
            if self._writes % _SWEEP_EVERY == 0:
                for sid in [s for s, exp in self._expires.items() if exp <= now]:
                    del self._expires[sid]

    def is_revoked(self, session_id: UUID) -> bool:
        """True while the session id's revocation entry lives."""
        expires_at = self._expires.get(session_id)
        return expires_at is not None and expires_at > self._clock.now().timestamp()

    def clear(self) -> None:
        """Forget every revocation."""
        with self._lock:
            self._expires.clear()
