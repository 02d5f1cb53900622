"""The per-request reads (:class:`~usermgmt.ports.OneStatementReads`) in SQL.

Each check an authenticated request makes is one ``SELECT`` run in autocommit mode: no
``BEGIN`` / ``ROLLBACK`` round trips around it. A single statement reads one consistent
snapshot (PostgreSQL's statement snapshot; SQLite's implicit read transaction), so the
answer is the one the transaction of several SELECTs it replaces would give, and it is
never cached. The statements are built once, here, with bound parameters.

On PostgreSQL with psycopg the statement (compiled once by SQLAlchemy) runs on the pooled
driver connection itself, prepared on the server: SQLAlchemy's execution and result
machinery would cost twice the driver's own work for these one-row reads. Elsewhere
(SQLite), and whenever something besides usermgmt's metrics listens to the engine's
statements (``echo``, a tracer, a test counting queries), it runs through SQLAlchemy.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Engine, Select, and_, bindparam, literal_column, or_, select
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from usermgmt.backends.sqlalchemy.engine import AUTOCOMMIT_OPTION, connect_first, redact
from usermgmt.backends.sqlalchemy.errors import raise_translated
from usermgmt.backends.sqlalchemy.repositories.auth import SESSIONS
from usermgmt.backends.sqlalchemy.repositories.roles import (
    MEMBERSHIP_ROLES,
    MEMBERSHIPS,
    PERMISSIONS,
    ROLE_PERMISSIONS,
    ROLES,
)
from usermgmt.backends.sqlalchemy.repositories.users import USERS
from usermgmt.models import Role, User
from usermgmt.observability import hooks
from usermgmt.permissions import SYSTEM_ROLES

__all__ = ["member_roles", "rows", "session_user", "user_by_id"]

logger = logging.getLogger("usermgmt.sql")

_USER_KEYS = tuple(column.key for column in USERS.columns)
_ROLE_KEYS = tuple(column.key for column in ROLES.columns)

# The session's revocation and the token's user, whether or not they are linked: the
# unit of work this replaces read them separately (sessions.get, users.get).
SESSION_USER = (
    select(SESSIONS.c.revoked_at, *USERS.columns)
    .select_from(SESSIONS.outerjoin(USERS, USERS.c.id == bindparam("user_id")))
    .where(SESSIONS.c.id == bindparam("session_id"))
)

USER = select(*USERS.columns).where(USERS.c.id == bindparam("user_id"))

# Inline constants (not bound parameters: the statements run with only their own).
_SYSTEM_ROLE_NAMES: list[ColumnElement[Any]] = [
    literal_column(f"'{name}'") for name in sorted(SYSTEM_ROLES)
]

# Membership, the user's state, the membership's roles in that organization and their
# permissions: one row per (role, permission), one row with NULL role for no role. The
# system roles of the catalogue (owner, admin, member) come without their stored links:
# their permissions are the live catalogue's (AuthorizationService.permissions_of), so
# an owner's check reads one row instead of one per permission.
MEMBER_ROLES = (
    select(USERS.c.is_active, *ROLES.columns, PERMISSIONS.c.name)
    .select_from(
        MEMBERSHIPS.join(USERS, USERS.c.id == MEMBERSHIPS.c.user_id)
        .outerjoin(MEMBERSHIP_ROLES, MEMBERSHIP_ROLES.c.membership_id == MEMBERSHIPS.c.id)
        .outerjoin(
            ROLES,
            and_(
                ROLES.c.id == MEMBERSHIP_ROLES.c.role_id,
                ROLES.c.organization_id == MEMBERSHIPS.c.organization_id,
            ),
        )
        .outerjoin(
            ROLE_PERMISSIONS,
            and_(
                ROLE_PERMISSIONS.c.role_id == ROLES.c.id,
                or_(ROLES.c.is_system.is_(False), ROLES.c.name.not_in(_SYSTEM_ROLE_NAMES)),
            ),
        )
        .outerjoin(PERMISSIONS, PERMISSIONS.c.id == ROLE_PERMISSIONS.c.permission_id)
    )
    .where(
        MEMBERSHIPS.c.organization_id == bindparam("organization_id"),
        MEMBERSHIPS.c.user_id == bindparam("user_id"),
    )
)


Params = Mapping[str, Any]


def rows(
    engines: Sequence[Engine], statement: Select[Any], params: Params
) -> list[tuple[Any, ...]]:
    """The rows of ``statement`` run alone, in autocommit, on the first engine of
    ``engines`` that connects (read replicas first, the primary last).

    Pooled connections are not pinged before use: one the server dropped (a restart, a
    failover) fails on use, the pool is emptied (its other connections are as old) and
    the read runs once more on a fresh connection, so an outage that is over costs no
    error. Database errors come out translated (BackendUnavailable and friends).
    Timestamps may come in the session's time zone (the builders below make them UTC).
    """
    if engines[-1].dialect.driver == "psycopg" and not any(map(_watched, engines)):
        return _psycopg_rows(engines, statement, params)
    for attempt in (1, 2):
        connection = connect_first(engines)
        try:
            if connection.dialect.name == "sqlite":
                # already in driver autocommit: only the BEGIN of the begin listener is
                # skipped (SQLAlchemy's AUTOCOMMIT would reset the sqlite3 mode on return)
                connection.execution_options(**{AUTOCOMMIT_OPTION: True})
            else:
                connection.execution_options(isolation_level="AUTOCOMMIT")
            return [tuple(row) for row in connection.execute(statement, params)]
        except DBAPIError as exc:
            if attempt == 1 and exc.connection_invalidated:
                continue
            raise_translated(exc)
        except SQLAlchemyError as exc:
            raise_translated(exc)
        finally:
            connection.close()
    raise AssertionError("unreachable")  # pragma: no cover


def _watched(engine: Engine) -> bool:
    """Whether something besides usermgmt's own metrics listens to the engine's statements
    (``echo``, a tracer, a test counting queries): then they go through SQLAlchemy, where
    the listeners see them, instead of straight to the driver."""
    events = engine.dispatch
    return (
        bool(engine.echo)
        or len(list(events.before_cursor_execute)) > 1
        or len(list(events.after_cursor_execute)) > 1
    )


_SQL: dict[tuple[int, int], str] = {}


def _sql(statement: Select[Any], engine: Engine) -> str:
    key = (id(statement), id(engine.dialect))
    text = _SQL.get(key)
    if text is None:
        text = _SQL[key] = str(statement.compile(dialect=engine.dialect))
    return text


def _raw_connection(engines: Sequence[Engine], driver_error: type[Exception]) -> tuple[Engine, Any]:
    """A pooled driver connection of the first engine that connects (replicas first)."""
    *replicas, last = engines
    for engine in (*replicas, last):
        try:
            return engine, engine.raw_connection()
        except (SQLAlchemyError, driver_error) as exc:
            if engine is last:
                if isinstance(exc, SQLAlchemyError):
                    raise_translated(exc)
                raise_translated(DBAPIError.instance(None, None, exc, driver_error))
            logger.warning("read replica %s unavailable; reading from the next", redact(engine.url))
    raise AssertionError("unreachable")  # pragma: no cover


def _psycopg_rows(
    engines: Sequence[Engine], statement: Select[Any], params: Params
) -> list[tuple[Any, ...]]:
    import psycopg  # the engine's driver: imported already

    for attempt in (1, 2):
        engine, pooled = _raw_connection(engines, psycopg.Error)
        driver = pooled.driver_connection
        sql = _sql(statement, engine)
        started = time.perf_counter() if hooks.active() else None
        try:
            driver.autocommit = True
            # prepare_threshold=none (PgBouncer in transaction mode): never prepared
            prepare = driver.prepare_threshold is not None
            try:
                found: list[tuple[Any, ...]] = driver.execute(
                    sql, params, prepare=prepare
                ).fetchall()
            finally:
                if not driver.closed:
                    driver.autocommit = False
        except psycopg.errors.InvalidSqlStatementName as exc:
            # the server forgot the prepared statement behind psycopg's back (DEALLOCATE
            # or DISCARD ALL from a pooler or another tool): psycopg would keep using the
            # name, so the connection goes and the read (nothing ran) runs on a new one
            pooled.invalidate(exc)
            if attempt == 1:
                logger.info("prepared statement gone on the server; retrying on a new connection")
                continue
            raise_translated(DBAPIError.instance(sql, params, exc, psycopg.Error))
        except psycopg.Error as exc:
            if driver.closed or driver.broken:
                # as SQLAlchemy does on a disconnect: this connection goes, and the pool's
                # older ones (as old: likely dead too) are closed and replaced at their
                # next checkout. (Engine.dispose would leave the live ones open beside a
                # new pool: past the connection limit.)
                engine.pool._invalidate(pooled, exc)
                if attempt == 1:
                    logger.info("database connection lost while pooled; retrying on a new one")
                    continue
            raise_translated(DBAPIError.instance(sql, params, exc, psycopg.Error))
        finally:
            pooled.close()
        if started is not None:
            hooks.observe_db("SELECT", time.perf_counter() - started)
        return found  # timestamps in the session's zone: the builders below make them UTC
    raise AssertionError("unreachable")  # pragma: no cover


def _utc(value: Any) -> Any:
    # timestamptz comes in the session's time zone: UTC, as UTCDateTime reads it
    return value.astimezone(UTC) if type(value) is datetime else value


def _user(row: Sequence[Any]) -> User:
    return User(**{key: _utc(value) for key, value in zip(_USER_KEYS, row, strict=True)})


def session_user(found: list[tuple[Any, ...]]) -> tuple[bool, User | None]:
    """(the session exists unrevoked, the user or None) from the rows of SESSION_USER."""
    if not found or found[0][0] is not None:
        return False, None
    row = found[0]
    return True, (None if row[1] is None else _user(row[1:]))


def user_by_id(found: list[tuple[Any, ...]]) -> User | None:
    """The user from the rows of USER."""
    return _user(found[0]) if found else None


def member_roles(found: list[tuple[Any, ...]]) -> tuple[bool, list[Role]] | None:
    """None for no membership, else (the user is active, the roles) from MEMBER_ROLES."""
    if not found:
        return None
    roles: dict[Any, tuple[dict[str, Any], set[str]]] = {}
    width = len(_ROLE_KEYS)
    for row in found:
        role_id = row[1]
        if role_id is None:
            continue  # a membership without roles (or a role of another organization)
        entry = roles.get(role_id)
        if entry is None:
            values = zip(_ROLE_KEYS, row[1 : 1 + width], strict=True)
            entry = roles[role_id] = ({key: _utc(value) for key, value in values}, set())
        permission = row[1 + width]
        if permission is not None:
            entry[1].add(permission)
    return bool(found[0][0]), [
        Role(**values, permissions=frozenset(permissions)) for values, permissions in roles.values()
    ]
