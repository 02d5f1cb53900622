"""Prepared statements on the PostgreSQL hot path (one autocommit SELECT per check).

* A prepared statement the server forgot behind psycopg's back (``DEALLOCATE ALL`` or
  ``DISCARD ALL`` sent by a pooler or another tool on the same server connection) costs no
  error: the read runs once more on a fresh connection.
* ``?prepare_threshold=none`` in the URL (PgBouncer in transaction mode, where a prepared
  statement may live on another server connection) prepares nothing, on the hot path too.
"""

from __future__ import annotations

import gc
from typing import Any

import psycopg
import pytest
from sqlalchemy import make_url

from tests.sql.conftest import truncate_all
from usermgmt.app import UserManagement
from usermgmt.backends.sqlalchemy import SqlUnitOfWorkFactory
from usermgmt.backends.sqlalchemy.engine import parse_url
from usermgmt.config import Settings
from usermgmt.errors import ConfigurationError
from usermgmt.testing import create_user

pytestmark = pytest.mark.sql


def _with(url: str, query: str) -> str:
    return url + ("&" if "?" in url else "?") + query


@pytest.mark.parametrize("reset", [b"DEALLOCATE ALL", b"DISCARD ALL"])
def test_a_prepared_statement_forgotten_by_the_server_is_no_error(
    pg_contracts_url: str, reset: bytes
) -> None:
    truncate_all(pg_contracts_url)
    um = UserManagement(
        Settings.for_tests(database_url=_with(pg_contracts_url, "connection_limit=1"))
    )
    try:
        um.seed()
        user, password = create_user(um)
        token = um.auth.login(user.email, password)
        factory = um.backends.uow
        assert isinstance(factory, SqlUnitOfWorkFactory)
        user = um.users.get(user.id)
        assert factory.user_by_id(user.id) == user
        assert um.auth.authenticate(token.access_token).id == user.id  # both prepared
        pooled = factory.engine.raw_connection()  # the pool's one connection
        driver = pooled.driver_connection
        assert driver is not None
        driver.pgconn.exec_(reset)  # not through psycopg: it never knows
        pooled.close()

        assert factory.user_by_id(user.id) == user
        assert um.auth.authenticate(token.access_token).id == user.id
    finally:
        um.close()


def test_prepare_threshold_none_prepares_nothing(pg_contracts_url: str) -> None:
    truncate_all(pg_contracts_url)
    url = _with(pg_contracts_url, "connection_limit=1&prepare_threshold=none")
    um = UserManagement(Settings.for_tests(database_url=url))
    try:
        um.seed()
        owner, password = create_user(um)
        org = um.organizations.create(owner.id, "Unprepared")
        token = um.auth.login(owner.email, password)
        factory = um.backends.uow
        assert isinstance(factory, SqlUnitOfWorkFactory)
        for _ in range(7):  # beyond psycopg's default threshold (5) too
            assert um.auth.authenticate(token.access_token).id == owner.id
            assert um.authz.has_permission(owner.id, org.id, "member:read")
            assert factory.user_by_id(owner.id) == um.users.get(owner.id)
        with factory.engine.connect() as connection:  # the same, only, pooled connection
            prepared = connection.exec_driver_sql("SELECT count(*) FROM pg_prepared_statements")
            assert prepared.scalar_one() == 0
    finally:
        um.close()


def test_prepare_threshold_in_the_url() -> None:
    url = "postgresql://u@localhost/db"
    assert parse_url(_with(url, "prepare_threshold=none")).kwargs["connect_args"] == {
        "prepare_threshold": None
    }
    assert parse_url(_with(url, "prepare_threshold=0")).kwargs["connect_args"] == {
        "prepare_threshold": 0
    }
    assert "prepare_threshold" not in parse_url(_with(url, "prepare_threshold=2")).url.query
    for bad in ("x", "-1", "1.5"):
        with pytest.raises(ConfigurationError, match="prepare_threshold"):
            parse_url(_with(url, f"prepare_threshold={bad}"))


def test_a_dropped_connection_leaves_the_pool_within_its_limit(pg_contracts_url: str) -> None:
    # One pooled connection killed on the server (pg_terminate_backend, idle_session_timeout)
    # fails the next read, which runs again on a fresh connection; the pool's older
    # connections are closed as they come back, never kept open beside a second pool.
    truncate_all(pg_contracts_url)
    um = UserManagement(
        Settings.for_tests(database_url=_with(pg_contracts_url, "connection_limit=3"))
    )
    collecting = gc.isenabled()
    gc.disable()  # the old connections must be closed, not left to the garbage collector
    try:
        um.seed()
        user, _ = create_user(um)
        factory = um.backends.uow
        assert isinstance(factory, SqlUnitOfWorkFactory)
        a, b, c = (factory.engine.raw_connection() for _ in range(3))
        pids = {pooled: _pid(pooled) for pooled in (a, b, c)}
        c.close()  # first back in the pool: the next read takes it
        with psycopg.connect(_libpq(pg_contracts_url), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [pids[c]])
        assert factory.user_by_id(user.id) is not None  # c fails, the read runs on a new one
        a.close()
        b.close()

        held = [factory.engine.raw_connection() for _ in range(3)]  # the limit, all at once
        try:
            with psycopg.connect(_libpq(pg_contracts_url), autocommit=True) as watcher:
                alive = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)",
                    [[pids[a], pids[b], *(_pid(pooled) for pooled in held)]],
                ).fetchone()
            assert alive is not None
            assert alive[0] <= 3
        finally:
            for pooled in held:
                pooled.close()
    finally:
        if collecting:
            gc.enable()
        um.close()


def _pid(pooled: Any) -> int:
    driver = pooled.driver_connection
    assert driver is not None
    return int(driver.info.backend_pid)


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
