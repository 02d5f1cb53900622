"""The login lockout counter on the SQL database (SECURITY.md F1, SEC-RL-01…06).

:class:`SqlAttemptCounter` keeps the per-account lockout state in ``lockout_counters``
(migration 0003), so every process on one database shares it: without Redis it is the
counter, and with Redis it is the backstop that
:class:`~usermgmt.backends.redis.FailoverAttemptCounter` counts in while Redis fails.

The semantics are those of :class:`~usermgmt.backends.memory.MemoryAttemptCounter` and
:class:`~usermgmt.backends.redis.RedisAttemptCounter`: :meth:`~SqlAttemptCounter.acquire`
reserves an attempt before the password is checked (CVE-2024-4629); the threshold of
failures locks the account for ``lockout_seconds``, doubling per further lock up to
``max_lockout_seconds``; refused attempts never touch the state; a state left unlocked
and untouched for 24 hours is forgotten.

Every operation runs alone, in autocommit, on its own pooled connection of the primary
(never inside a caller's unit of work), and decides in one statement, so it is atomic
across threads and processes without holding a lock between round trips:

==================  ==================================================================
acquire             ``INSERT … ON CONFLICT (key) DO UPDATE … WHERE <may reserve>
                    RETURNING``: a row back means reserved. A refusal reads the lock
                    (one more ``SELECT``) for ``retry_after``.
record_failure      ``UPDATE … SET <lock> WHERE count >= max_failures RETURNING level``:
                    a row back means this failure locked the account; otherwise an
                    upsert records the failure's time (two statements).
record_success,     ``DELETE``
reset
release             ``UPDATE … SET count = count - 1 WHERE count > 0``
locked_for          ``SELECT locked_until`` (the Redis failover, after an outage)
==================  ==================================================================

On PostgreSQL, ``ON CONFLICT DO UPDATE`` and ``UPDATE`` lock the row and evaluate their
conditions on its newest committed version, so concurrent reservations queue on the
row and never exceed the threshold; on SQLite every write holds the database lock.

Rows are keyed by the SHA-256 of the counter key: the table never holds an address.
Times are seconds since the epoch from the injected clock, as in Redis (application
servers need synchronised clocks, as JWT expiry already requires). Every 1024th
reservation of a process deletes up to 1000 forgotten states (unlocked and untouched for
24 hours), so guesses against random addresses cannot grow the table without bound.

Every database error comes out as :class:`~usermgmt.errors.BackendUnavailable` (a
missing table or grant, a lock timeout too: the lockout cannot be counted here), except from
:meth:`~SqlAttemptCounter.release`, which runs on error paths and is best effort (it logs
and returns): a release the database missed leaves the reservation counted (stricter, never looser)
until the next success, lock or the 24-hour decay.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, TypeVar

from sqlalchemy import (
    BindParameter,
    Connection,
    Double,
    Engine,
    Integer,
    String,
    and_,
    bindparam,
    case,
    delete,
    not_,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from usermgmt.backends.sqlalchemy.engine import AUTOCOMMIT_OPTION
from usermgmt.backends.sqlalchemy.errors import translate
from usermgmt.backends.sqlalchemy.models import LockoutCounterRow, table_of
from usermgmt.clock import SystemClock
from usermgmt.errors import BackendUnavailable, UserMgmtError
from usermgmt.ports import AttemptDecision, Clock
from usermgmt.security.limits import (
    LOCKOUT_FORGET_AFTER_SECONDS,
    check_lockout_settings,
    lockout_duration,
)

__all__ = ["FORGET_AFTER_SECONDS", "LOCKOUT_COUNTERS", "SqlAttemptCounter", "counter_key"]

logger = logging.getLogger("usermgmt.sql")

T = TypeVar("T")

#: An unlocked lockout state untouched this long is forgotten (as in memory and Redis).
FORGET_AFTER_SECONDS = LOCKOUT_FORGET_AFTER_SECONDS

#: The table of migration 0003.
LOCKOUT_COUNTERS = table_of(LockoutCounterRow)

_SWEEP_EVERY = 1024
_SWEEP_BATCH = 1000

_t = LOCKOUT_COUNTERS.c
_NOW: BindParameter[float] = bindparam("at", type_=Double())
_FORGET: BindParameter[float] = bindparam("forget", type_=Double())
_MAX: BindParameter[int] = bindparam("max_failures", type_=Integer())
_KEY: BindParameter[str] = bindparam("row_key", type_=String())

# A state that is unlocked and was left untouched for the decay period counts as new.
_STALE = and_(_t.locked_until <= _NOW, _NOW - _t.updated_at >= _FORGET)


def counter_key(key: str) -> str:
    """The row key of a counter key: SHA-256, hex (the table holds no address)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _unavailable(error: SQLAlchemyError) -> NoReturn:
    """Raise BackendUnavailable for any database error of the counter: a missing table
    (migration 0003 not applied), a missing grant or a lock timeout means the lockout
    cannot be counted here, which callers (the Redis failover, the adapters' 503) handle;
    a raw SQLAlchemy error would escape them (a 500)."""
    translated = translate(error)
    if isinstance(translated, BackendUnavailable):
        raise translated from error
    raise BackendUnavailable("The login lockout counter is unavailable.") from error


def _upsert(dialect: str) -> Any:
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


class SqlAttemptCounter:
    """Per-account login lockout with exponential backoff in ``lockout_counters``,
    shared by every process on the database (see the module docstring).

    ``engine`` is the primary's (``SqlUnitOfWorkFactory.engine``): the counter borrows
    its pool, one connection per operation, and never disposes of it.
    """

    def __init__(
        self,
        engine: Engine,
        clock: Clock | None = None,
        *,
        max_failures: int = 10,
        lockout_seconds: float = 60.0,
        max_lockout_seconds: float = 3600.0,
    ) -> None:
        check_lockout_settings(max_failures, lockout_seconds, max_lockout_seconds)
        dialect = engine.dialect.name
        if dialect not in ("postgresql", "sqlite"):
            raise ValueError(f"unsupported database: {dialect}")
        self._engine = engine
        self._dialect = dialect
        self._clock: Clock = clock if clock is not None else SystemClock()
        self.max_failures = max_failures
        self.lockout_seconds = float(lockout_seconds)
        self.max_lockout_seconds = float(max_lockout_seconds)
        self._calls = 0
        self._calls_lock = threading.Lock()
        self._build_statements()

    # -- statements ---------------------------------------------------------------------------

    def duration(self, level: int) -> float:
        """The length of the ``level``-th lock (1 = the first), as the other counters."""
        return lockout_duration(level, self.lockout_seconds, self.max_lockout_seconds)

    def _build_statements(self) -> None:
        insert = _upsert(self._dialect)
        fresh = {"key": _KEY, "count": 1, "locked_until": 0.0, "level": 0, "updated_at": _NOW}

        # Reserve: a new or forgotten state starts at one reservation; an unlocked one
        # below the threshold gains one. Otherwise nothing is written (and nothing comes
        # back), so a refusal never keeps the state alive.
        acquire = insert(LOCKOUT_COUNTERS).values(fresh)
        self._acquire = acquire.on_conflict_do_update(
            index_elements=[_t.key],
            set_={
                "count": case((_STALE, 1), else_=_t.count + 1),
                "locked_until": case((_STALE, 0.0), else_=_t.locked_until),
                "level": case((_STALE, 0), else_=_t.level),
                "updated_at": _NOW,
            },
            where=and_(_t.locked_until <= _NOW, or_(_STALE, _t.count < _MAX)),
        ).returning(_t.count)
        self._locked_until = select(_t.locked_until).where(_t.key == _KEY)

        # Lock: the durations by the current level (the new level minus one), as a CASE
        # so the lock is written in the same statement that decides it.
        durations: dict[int, float] = {}
        level = 0
        while level < 65 and self.duration(level + 1) < self.max_lockout_seconds:
            durations[level] = self.duration(level + 1)
            level += 1
        lock_for = (
            case(durations, value=_t.level, else_=self.max_lockout_seconds)
            if durations
            else self.max_lockout_seconds
        )
        self._lock = (
            update(LOCKOUT_COUNTERS)
            .where(_t.key == _KEY, _t.count >= _MAX, not_(_STALE))
            .values(count=0, level=_t.level + 1, locked_until=_NOW + lock_for, updated_at=_NOW)
            .returning(_t.level)
        )
        # A failure that does not lock: remember when it happened (restarting a
        # forgotten state, or a missing one, at zero).
        touch = insert(LOCKOUT_COUNTERS).values({**fresh, "count": 0})
        self._touch = touch.on_conflict_do_update(
            index_elements=[_t.key],
            set_={
                "count": case((_STALE, 0), else_=_t.count),
                "locked_until": case((_STALE, 0.0), else_=_t.locked_until),
                "level": case((_STALE, 0), else_=_t.level),
                "updated_at": _NOW,
            },
        )
        self._release = (
            update(LOCKOUT_COUNTERS).where(_t.key == _KEY, _t.count > 0).values(count=_t.count - 1)
        )
        self._delete = delete(LOCKOUT_COUNTERS).where(_t.key == _KEY)
        # The condition is repeated outside the subquery: PostgreSQL re-checks it on a
        # row that a concurrent reservation revived, which then stays.
        forgotten = and_(_t.locked_until <= _NOW, _t.updated_at <= _NOW - _FORGET)
        batch = select(_t.key).where(forgotten).limit(_SWEEP_BATCH).scalar_subquery()
        self._sweep = delete(LOCKOUT_COUNTERS).where(_t.key.in_(batch), forgotten)

    # -- running one statement ----------------------------------------------------------------

    def _connect(self) -> Connection:
        try:
            connection = self._engine.connect()
        except SQLAlchemyError as exc:
            _unavailable(exc)
        if self._dialect == "sqlite":
            # sqlite3 runs in driver autocommit here: only the BEGIN is skipped
            connection.execution_options(**{AUTOCOMMIT_OPTION: True})
        else:
            connection.execution_options(isolation_level="AUTOCOMMIT")
        return connection

    def _run(self, work: Callable[[Connection], T], *, retry: bool = True) -> T:
        """``work(connection)`` alone in autocommit, with database errors translated.

        A pooled connection the server dropped fails on its first statement (nothing ran):
        then the work runs once more on a fresh connection, when ``retry`` allows it.
        """
        for attempt in (1, 2):
            connection = self._connect()
            try:
                return work(connection)
            except DBAPIError as exc:
                if retry and attempt == 1 and exc.connection_invalidated:
                    logger.info("database connection lost while pooled; retrying on a new one")
                    continue
                _unavailable(exc)
            except SQLAlchemyError as exc:
                _unavailable(exc)
            finally:
                connection.close()
        raise AssertionError("unreachable")  # pragma: no cover

    def _params(self, key: str, **extra: Any) -> Mapping[str, Any]:
        return {
            "row_key": counter_key(key),
            "at": self._clock.now().timestamp(),
            "forget": FORGET_AFTER_SECONDS,
            "max_failures": self.max_failures,
            **extra,
        }

    # -- AttemptCounter -----------------------------------------------------------------------

    def acquire(self, key: str) -> AttemptDecision:
        """Reserve an attempt; refused while locked (``retry_after`` = the rest of the
        lock) or while ``max_failures`` attempts are reserved (``retry_after`` = 1 s)."""
        params = self._params(key)
        now = float(params["at"])
        sweep = False
        with self._calls_lock:
            self._calls += 1
            if self._calls % _SWEEP_EVERY == 0:
                sweep = True

        def work(connection: Connection) -> tuple[bool, float]:
            if connection.execute(self._acquire, params).all():
                return True, 0.0
            row = connection.execute(self._locked_until, params).first()
            locked_until = 0.0 if row is None else float(row[0])
            return False, (locked_until - now if locked_until > now else 1.0)

        allowed, retry_after = self._run(work)
        if sweep:
            self.sweep()
        return AttemptDecision(allowed=allowed, retry_after=retry_after)

    def locked_for(self, key: str) -> float:
        """The rest of ``key``'s lock in seconds, 0.0 when it is not locked (one ``SELECT``,
        nothing written): the Redis failover asks it after an outage, see
        :class:`~usermgmt.backends.redis.FailoverAttemptCounter`."""
        params = self._params(key)
        now = float(params["at"])
        row = self._run(lambda connection: connection.execute(self._locked_until, params).first())
        locked_until = 0.0 if row is None else float(row[0])
        return locked_until - now if locked_until > now else 0.0

    def record_failure(self, key: str) -> float | None:
        """A reserved attempt failed; the lock duration in seconds if the key is now locked."""
        params = self._params(key)

        def work(connection: Connection) -> int | None:
            locked = connection.execute(self._lock, params).first()
            if locked is not None:
                return int(locked[0])
            connection.execute(self._touch, params)
            return None

        level = self._run(work)
        return None if level is None else self.duration(level)

    def record_success(self, key: str) -> None:
        """A reserved attempt succeeded: forget the failures, the lock and the backoff level."""
        self.reset(key)

    def release(self, key: str) -> None:
        """Give back one reserved attempt (the check could not run). Best effort: a
        database error is logged, not raised (see the module docstring)."""
        params = {"row_key": counter_key(key)}
        try:
            self._run(lambda connection: connection.execute(self._release, params), retry=False)
        except UserMgmtError as exc:
            logger.warning("lockout reservation not released: %s", exc)

    def reset(self, key: str) -> None:
        """Forget everything about ``key``."""
        params = {"row_key": counter_key(key)}
        self._run(lambda connection: connection.execute(self._delete, params))

    # -- housekeeping -------------------------------------------------------------------------

    def sweep(self) -> int:
        """Delete up to 1000 forgotten states (unlocked and untouched for 24 hours); the
        number deleted. Called by every 1024th :meth:`acquire`; errors are logged."""
        params = {"at": self._clock.now().timestamp(), "forget": FORGET_AFTER_SECONDS}
        try:
            return int(
                self._run(lambda connection: connection.execute(self._sweep, params).rowcount)
            )
        except UserMgmtError as exc:
            logger.warning("lockout counter sweep skipped: %s", exc)
            return 0
