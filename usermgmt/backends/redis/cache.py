"""A shared :class:`~usermgmt.ports.Cache` on Redis (standalone or Cluster)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from usermgmt.backends.redis.client import RedisConnection, WrongValue

__all__ = ["RedisCache"]

# INCR, and the TTL only when the key is new (an existing key keeps its expiry).
_INCR = """
local existed = redis.call('EXISTS', KEYS[1])
local value = redis.call('INCR', KEYS[1])
if existed == 0 and ARGV[1] ~= '' then
    redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return value
"""


def _ttl_ms(ttl: float) -> int:
    return max(1, math.ceil(ttl * 1000))


class RedisCache:
    """String values with optional TTLs, shared by every process using the same Redis.

    Keys get the connection prefix (``um:``) unless they already start with it, so the
    permission cache's keys (``um:{o:<org>}:v``, ``um:{o:<org>}:u:<user>``) are stored
    as written; their hash tag keeps an organization's keys in one Cluster slot, so a
    ``get_many`` of them is a single MGET. Keys of different slots are read with one
    MGET per slot. Every failure raises :class:`~usermgmt.errors.BackendUnavailable`.
    """

    def __init__(self, connection: RedisConnection) -> None:
        self._redis = connection
        self._prefix = connection.prefix
        self._incr = connection.script(_INCR)

    def _key(self, key: str) -> str:
        return key if key.startswith(self._prefix) else self._prefix + key

    def get(self, key: str) -> str | None:
        """The value, or None if absent or expired."""
        full = self._key(key)
        value: str | None = self._redis.run(lambda client: client.get(full), command="GET")
        return value

    def get_many(self, keys: Sequence[str]) -> list[str | None]:
        """The values of ``keys``, in order, None where absent or expired."""
        if not keys:
            return []
        full = [self._key(key) for key in keys]
        if self._redis.cluster:
            values: list[str | None] = self._redis.run(
                lambda client: client.mget_nonatomic(full), command="MGET"
            )
        else:
            values = self._redis.run(lambda client: client.mget(full), command="MGET")
        return list(values)

    def set(self, key: str, value: str, ttl: float | None = None) -> None:
        """Store ``value`` for ``ttl`` seconds (forever when None; expired at once when <= 0)."""
        full = self._key(key)
        if ttl is not None and ttl <= 0:
            self._redis.run(lambda client: client.delete(full), command="DEL")
        elif ttl is None:
            self._redis.run(lambda client: client.set(full, value), command="SET")
        else:
            ms = _ttl_ms(ttl)
            self._redis.run(lambda client: client.set(full, value, px=ms), command="SET")

    def delete(self, *keys: str) -> None:
        """Remove the keys; absent ones are ignored (one DEL per slot on a Cluster)."""
        if not keys:
            return
        full = [self._key(key) for key in keys]
        self._redis.run(lambda client: client.delete(*full), command="DEL")

    def incr(self, key: str, ttl: float | None = None) -> int:
        """Atomically add one and return the new value; ``ttl`` applies to a new key only.
        Raises ValueError if the stored value is not an integer."""
        full = self._key(key)
        ttl_arg = "" if ttl is None else str(_ttl_ms(ttl) if ttl > 0 else 1)
        script = self._incr

        def incr(client: Any) -> int:
            from redis.exceptions import ResponseError

            try:
                return int(script.call(client, [full], [ttl_arg]))
            except ResponseError as exc:
                if "not an integer" in str(exc):
                    raise WrongValue(f"the value of {key!r} is not an integer") from None
                raise

        return self._redis.run(incr, command="EVALSHA")

    def pop(self, key: str) -> str | None:
        """Atomically read and delete (GETDEL, Redis 6.2+): of concurrent callers, only
        one gets the value."""
        full = self._key(key)
        value: str | None = self._redis.run(lambda client: client.getdel(full), command="GETDEL")
        return value

    def ping(self) -> None:
        """One round trip to Redis (health checks). Raises BackendUnavailable."""
        self._redis.ping()
