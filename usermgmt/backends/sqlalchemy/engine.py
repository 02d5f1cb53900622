"""Engines: URL normalisation, pool options from the URL, SQLite pragmas and locking.

* ``postgresql://`` and ``postgres://`` URLs (as the seed writes them) are driven by
  psycopg 3 (``postgresql+psycopg://``); an explicit driver is kept as given.
* Pooled connections are not pinged before use: a connection the server dropped is
  detected by the first statement that uses it, and that statement runs once more on a
  fresh connection (see :mod:`usermgmt.backends.sqlalchemy.uow`).
* ``?connection_limit=20&pool_timeout=10`` (the seed's pool settings) become the pool's
  ``pool_size`` (with no overflow) and ``pool_timeout``; they are stripped from the URL
  before connecting. So is psycopg's ``?prepare_threshold=`` (a whole number, or ``none``
  to prepare nothing: PgBouncer in transaction mode without prepared-statement support).
* SQLite connections enforce foreign keys, use the WAL journal and wait for locks
  (``busy_timeout``). SQLAlchemy emits the ``BEGIN`` itself: ``BEGIN IMMEDIATE`` for
  units of work that may write, so concurrent writers queue up on the database lock
  instead of deadlocking when a reader tries to upgrade, and a plain (deferred)
  ``BEGIN`` for read-only ones.
* Every statement's duration goes to :func:`usermgmt.observability.hooks.observe_db`
  (``db_query_duration_seconds`` once metrics are enabled; nothing is measured before).
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from usermgmt.backends.sqlalchemy.errors import raise_translated
from usermgmt.errors import BackendUnavailable, ConfigurationError, MissingDependency
from usermgmt.observability import hooks

__all__ = [
    "AUTOCOMMIT_OPTION",
    "READ_ONLY_OPTION",
    "SQLITE_BUSY_TIMEOUT_MS",
    "EngineOptions",
    "build_engine",
    "connect_first",
    "parse_url",
    "redact",
]

#: Execution option marking a connection as serving a read-only unit of work.
READ_ONLY_OPTION = "usermgmt_read_only"

#: Execution option of a connection that runs single statements outside a transaction
#: (:mod:`usermgmt.backends.sqlalchemy.hot`): SQLite then gets no ``BEGIN``.
AUTOCOMMIT_OPTION = "usermgmt_autocommit"

#: How long a SQLite connection waits for the database lock before failing.
SQLITE_BUSY_TIMEOUT_MS = 30_000

_POOL_PARAMETERS = ("connection_limit", "pool_timeout")


@dataclass(frozen=True)
class EngineOptions:
    """A normalised URL and the keyword arguments of :func:`sqlalchemy.create_engine`."""

    url: URL
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    @property
    def is_postgresql(self) -> bool:
        return self.url.get_backend_name() == "postgresql"


def redact(url: str | URL) -> str:
    """The URL with its password hidden (for messages and logs)."""
    try:
        parsed = url if isinstance(url, URL) else make_url(url)
    except ArgumentError:
        return "<unparseable database URL>"
    return parsed.render_as_string(hide_password=True)


def _positive(name: str, value: str, convert: type[int] | type[float]) -> int | float:
    try:
        number = convert(value)
    except ValueError:
        raise ConfigurationError(f"DATABASE_URL: {name} must be a number, not {value!r}") from None
    if number <= 0:
        raise ConfigurationError(f"DATABASE_URL: {name} must be positive")
    return number


def _threshold(value: str | tuple[str, ...]) -> int | None:
    if isinstance(value, str) and value.lower() == "none":
        return None
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise ConfigurationError(
        f"DATABASE_URL: prepare_threshold must be a whole number or none, not {value!r}"
    )


def parse_url(url: str) -> EngineOptions:
    """Normalise a database URL and take the pool settings out of its query string.

    Raises ConfigurationError for a malformed URL, an in-memory SQLite database or a bad
    pool setting, and MissingDependency when psycopg is needed but not installed.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigurationError(f"DATABASE_URL is not a valid URL: {redact(url)}") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    backend = parsed.get_backend_name()
    if backend not in ("postgresql", "sqlite"):
        raise ConfigurationError(f"unsupported database: {backend} (use PostgreSQL or SQLite)")
    if backend == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise ConfigurationError(
            "in-memory SQLite is not supported (every connection would see its own empty "
            "database): use a file (sqlite:///./usermgmt.db) or memory:// for tests"
        )
    if parsed.get_driver_name() == "psycopg" and importlib.util.find_spec("psycopg") is None:
        raise MissingDependency("psycopg", "postgres")

    kwargs: dict[str, Any] = {}
    query = dict(parsed.query)
    limit = query.pop("connection_limit", None)
    timeout = query.pop("pool_timeout", None)
    if isinstance(limit, tuple) or isinstance(timeout, tuple):
        raise ConfigurationError("DATABASE_URL: connection_limit and pool_timeout appear twice")
    if limit is not None:
        kwargs["pool_size"] = int(_positive("connection_limit", limit, int))
        kwargs["max_overflow"] = 0  # the limit is the total, as in the seed
    if timeout is not None:
        kwargs["pool_timeout"] = float(_positive("pool_timeout", timeout, float))
    threshold = (
        query.pop("prepare_threshold", None) if parsed.get_driver_name() == "psycopg" else None
    )
    if threshold is not None:  # psycopg's: "none" never prepares (PgBouncer, transaction mode)
        kwargs["connect_args"] = {"prepare_threshold": _threshold(threshold)}
    parsed = parsed.set(query=query)
    # No pool_pre_ping (a round trip per checkout): a connection that died while pooled
    # is detected by the first statement of a unit of work, which then runs again on a
    # fresh connection (SqlUnitOfWork._run, hot.one_statement).
    return EngineOptions(parsed, kwargs)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # sqlite3 must not emit BEGIN on its own: the "begin" listener below does.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        # NORMAL is durable with WAL and saves an fsync per commit.
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    options = connection.get_execution_options()
    if options.get(AUTOCOMMIT_OPTION):
        return  # one statement, its own implicit transaction
    if options.get(READ_ONLY_OPTION):
        connection.exec_driver_sql("BEGIN")
    else:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


_STARTED = "usermgmt_statement_started"
_OPERATIONS = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE"})


def _statement_operation(statement: str) -> str:
    """SELECT, INSERT, UPDATE, DELETE, or OTHER (DDL, BEGIN, PRAGMA, WITH ...)."""
    head = statement.lstrip(" \t\r\n(").split(None, 1)
    verb = head[0].upper() if head else ""
    return verb if verb in _OPERATIONS else "OTHER"


def _before_cursor_execute(
    conn: Connection, _cursor: Any, _statement: str, _params: Any, _context: Any, _many: bool
) -> None:
    if hooks.active():
        conn.info.setdefault(_STARTED, []).append(time.perf_counter())


def _after_cursor_execute(
    conn: Connection, _cursor: Any, statement: str, _params: Any, _context: Any, _many: bool
) -> None:
    started = conn.info.get(_STARTED)
    if started:
        hooks.observe_db(_statement_operation(statement), time.perf_counter() - started.pop())


def _on_error(context: Any) -> None:
    # A failed statement never reaches after_cursor_execute: forget its start.
    connection = getattr(context, "connection", None)
    started = connection.info.get(_STARTED) if connection is not None else None
    if started:
        started.pop()


def build_engine(url: str, *, echo: bool = False) -> Engine:
    """An engine for ``url`` with the options above. Connects to nothing yet.

    Raises ConfigurationError or MissingDependency (see :func:`parse_url`).
    """
    options = parse_url(url)
    kwargs = dict(options.kwargs)
    if options.is_sqlite:
        kwargs.setdefault("connect_args", {})["check_same_thread"] = False
    engine = create_engine(options.url, echo=echo, **kwargs)
    if options.is_sqlite:
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
    event.listen(engine, "before_cursor_execute", _before_cursor_execute)
    event.listen(engine, "after_cursor_execute", _after_cursor_execute)
    event.listen(engine, "handle_error", _on_error)
    return engine


logger = logging.getLogger("usermgmt.sql")


def _connect(engine: Engine) -> Connection:
    try:
        return engine.connect()
    except SQLAlchemyError as exc:
        raise_translated(exc)


def connect_first(engines: Sequence[Engine]) -> Connection:
    """A connection of the first engine that connects: read replicas first, the primary
    last (a replica that cannot be reached is skipped with a warning). Raises
    BackendUnavailable when the last one cannot connect either."""
    *replicas, last = engines
    for engine in replicas:
        try:
            return _connect(engine)
        except BackendUnavailable:
            logger.warning("read replica %s unavailable; reading from the next", redact(engine.url))
    return _connect(last)
