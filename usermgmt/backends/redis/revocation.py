"""The access-token denylist on Redis: revoked session ids, shared by every process.

Key layout: ``um:rv:{<session id hex>}`` → ``"1"`` with a TTL. A logout, logout-all,
password change or deactivation in one process is seen by every other process's next
:meth:`~RedisRevocationStore.is_revoked` (one EXISTS).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from uuid import UUID

from usermgmt.backends.redis.client import RedisConnection

__all__ = ["RedisRevocationStore"]

# Set every key of KEYS to "1" for ARGV[1] ms unless it already lives longer (or forever).
_REVOKE = """
local ttl = tonumber(ARGV[1])
for _, key in ipairs(KEYS) do
    local current = redis.call('PTTL', key)
    if current == -2 or (current >= 0 and current < ttl) then
        redis.call('SET', key, '1', 'PX', ttl)
    end
end
return #KEYS
"""

_BATCH = 500  # keys per script call (a call blocks the server while it runs)


class RedisRevocationStore:
    """Revoked session ids with an expiry, in Redis.

    ``min_ttl_seconds`` is a floor on every entry's lifetime: :func:`build` sets it to
    the access-token lifetime plus the JWT leeway, so an entry always outlives the
    tokens it kills even if a caller passes a shorter TTL. Failures raise
    :class:`~usermgmt.errors.BackendUnavailable`; the services then ask the database
    (the source of truth), never assuming "not revoked".
    """

    def __init__(self, connection: RedisConnection, *, min_ttl_seconds: float = 0.0) -> None:
        self._redis = connection
        self.min_ttl_seconds = min_ttl_seconds
        self._revoke = connection.script(_REVOKE)

    def _key(self, session_id: UUID) -> str:
        return self._redis.key("rv", session_id.hex)

    def revoke(self, session_ids: Iterable[UUID], ttl_seconds: float) -> None:
        """Remember the ids as revoked for ``ttl_seconds`` (at least ``min_ttl_seconds``;
        an existing longer entry is kept)."""
        keys = [self._key(session_id) for session_id in session_ids]
        ttl = max(ttl_seconds, self.min_ttl_seconds)
        if not keys or ttl <= 0:
            return
        ttl_ms = max(1, math.ceil(ttl * 1000))
        for group in self._groups(keys):
            for start in range(0, len(group), _BATCH):
                self._redis.eval(self._revoke, group[start : start + _BATCH], [ttl_ms])

    def is_revoked(self, session_id: UUID) -> bool:
        """True while the session id's entry lives; BackendUnavailable when Redis fails."""
        key = self._key(session_id)
        return bool(self._redis.run(lambda client: client.exists(key), command="EXISTS"))

    def _groups(self, keys: list[str]) -> list[list[str]]:
        """The keys grouped so that each group shares a Cluster hash slot (one group standalone)."""
        if not self._redis.cluster:
            return [keys]
        from redis.crc import key_slot

        slots: defaultdict[int, list[str]] = defaultdict(list)
        for key in keys:
            slots[key_slot(key.encode())].append(key)
        return list(slots.values())
