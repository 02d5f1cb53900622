"""The unit-of-work contract suite, unchanged, against SQLite and a real PostgreSQL;
then what only the SQL backend promises (URLs, pools, replicas, error translation)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.sql.conftest import fresh_sqlite_url, truncate_all
from usermgmt.backends.sqlalchemy import SqlUnitOfWorkFactory, build_unit_of_work_factory
from usermgmt.backends.sqlalchemy.engine import parse_url
from usermgmt.backends.sqlalchemy.errors import translate
from usermgmt.config import Settings
from usermgmt.errors import (
    BackendUnavailable,
    ConfigurationError,
    EmailTaken,
    SlugTaken,
    TransactionConflict,
)
from usermgmt.ports import UnitOfWorkFactory
from usermgmt.testing.contracts import UnitOfWorkContract, make_organization, make_user

pytestmark = pytest.mark.sql

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def pg_factory(pg_contracts_url: str) -> Iterator[SqlUnitOfWorkFactory]:
    """One factory (one pool) for every PostgreSQL test of the session."""
    factory = SqlUnitOfWorkFactory(pg_contracts_url)
    yield factory
    factory.dispose()


@pytest.fixture(params=BACKENDS)
def sql_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlUnitOfWorkFactory]:
    """An empty, migrated database: a fresh SQLite file, or the truncated PostgreSQL one."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        factory = SqlUnitOfWorkFactory(fresh_sqlite_url(template, tmp_path))
        yield factory
        factory.dispose()
    else:
        url: str = request.getfixturevalue("pg_contracts_url")
        truncate_all(url)
        yield request.getfixturevalue("pg_factory")


@pytest.fixture
def uow_factory(sql_factory: SqlUnitOfWorkFactory) -> UnitOfWorkFactory:
    return sql_factory


class TestSqlUnitOfWork(UnitOfWorkContract):
    """Every repository and transaction rule of :mod:`usermgmt.testing.contracts`."""


# --- what only the SQL backend promises -----------------------------------------------


class TestSqlSpecifics:
    def test_domain_error_leaves_the_unit_of_work_usable(
        self, sql_factory: SqlUnitOfWorkFactory
    ) -> None:
        taken = make_user(email="taken@example.com")
        org = make_organization(slug="taken")
        with sql_factory() as uow:
            uow.users.add(taken)
            uow.organizations.add(org)
            uow.commit()
        with sql_factory() as uow:
            with pytest.raises(EmailTaken):
                uow.users.add(make_user(email="TAKEN@example.com"))
            with pytest.raises(SlugTaken):
                uow.organizations.add(make_organization(slug="taken"))
            renamed = dataclasses.replace(org, name="Renamed")
            uow.organizations.update(renamed)
            survivor = make_user()
            uow.users.add(survivor)  # the transaction is still alive (savepoint on PG)
            uow.commit()
        with sql_factory() as uow:
            assert uow.users.get(survivor.id) == survivor
            assert uow.organizations.get(org.id) == renamed

    def test_read_only_unit_of_work_refuses_writes(self, sql_factory: SqlUnitOfWorkFactory) -> None:
        with sql_factory(read_only=True) as uow, pytest.raises(RuntimeError, match="read-only"):
            uow.users.add(make_user())

    def test_unit_of_work_cannot_be_entered_twice(self, sql_factory: SqlUnitOfWorkFactory) -> None:
        uow = sql_factory()
        with uow, pytest.raises(RuntimeError, match="already open"):
            uow.__enter__()

    def test_timestamps_come_back_utc_aware(self, sql_factory: SqlUnitOfWorkFactory) -> None:
        user = make_user()
        with sql_factory() as uow:
            uow.users.add(user)
            uow.commit()
        with sql_factory() as uow:
            loaded = uow.users.get(user.id)
        assert loaded is not None
        assert loaded.created_at.utcoffset() is not None
        assert loaded.created_at.utcoffset().total_seconds() == 0  # type: ignore[union-attr]

    def test_naive_datetimes_are_refused(self, sql_factory: SqlUnitOfWorkFactory) -> None:
        naive = make_user(created_at=make_user().created_at.replace(tzinfo=None))
        with sql_factory() as uow, pytest.raises(Exception, match="naive datetime"):
            uow.users.add(naive)

    def test_writers_serialise_without_deadlock(self, sql_factory: SqlUnitOfWorkFactory) -> None:
        """Many threads each reading then writing: SQLite's BEGIN IMMEDIATE makes them
        queue (a deferred BEGIN would deadlock on the lock upgrade)."""
        errors: list[BaseException] = []

        def work() -> None:
            try:
                with sql_factory() as uow:
                    uow.users.count()
                    uow.users.add(make_user())
                    uow.commit()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        with sql_factory() as uow:
            assert uow.users.count() == 12


class TestUrlsAndPools:
    def test_seed_postgres_urls_map_to_psycopg_and_pool_settings(self) -> None:
        options = parse_url(
            "postgresql://app:s3cret@db.internal:5432/app?connection_limit=20&pool_timeout=10"
        )
        assert options.url.drivername == "postgresql+psycopg"
        assert dict(options.url.query) == {}
        assert options.kwargs["pool_size"] == 20
        assert options.kwargs["max_overflow"] == 0
        assert options.kwargs["pool_timeout"] == 10
        assert parse_url("postgres://h/db").url.drivername == "postgresql+psycopg"
        kept = parse_url("postgresql://h/db?sslmode=require&connection_limit=5").url
        assert dict(kept.query) == {"sslmode": "require"}

    @pytest.mark.parametrize(
        "url",
        [
            "sqlite://",
            "sqlite:///:memory:",
            "mysql://h/db",
            "postgresql://h/db?connection_limit=zero",
            "postgresql://h/db?pool_timeout=-1",
            "not a url",
        ],
    )
    def test_unusable_urls_raise_configuration_error(self, url: str) -> None:
        with pytest.raises(ConfigurationError):
            parse_url(url)

    def test_default_sqlite_url_and_settings(self, tmp_path: Path) -> None:
        options = parse_url("sqlite:///./usermgmt.db")
        assert options.is_sqlite
        settings = Settings.for_tests(database_url=f"sqlite:///{tmp_path / 'x.db'}")
        factory = build_unit_of_work_factory(settings)
        try:
            assert factory.dialect_name == "sqlite"
            assert factory.replicas == ()
        finally:
            factory.dispose()

    def test_check_raises_backend_unavailable(self, tmp_path: Path) -> None:
        missing_dir = tmp_path / "no" / "such" / "dir" / "x.db"
        factory = SqlUnitOfWorkFactory(f"sqlite:///{missing_dir}")
        try:
            with pytest.raises(BackendUnavailable):
                factory.check()
            with pytest.raises(BackendUnavailable), factory() as uow:
                uow.users.count()
        finally:
            factory.dispose()

    def test_unreachable_postgres_is_backend_unavailable(self) -> None:
        pytest.importorskip("psycopg")
        factory = SqlUnitOfWorkFactory("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
        try:
            with pytest.raises(BackendUnavailable):
                factory.check()
            with pytest.raises(BackendUnavailable), factory():
                pass
        finally:
            factory.dispose()


class TestReplicas:
    def test_read_only_units_of_work_go_to_the_replicas(
        self, sqlite_template: Path, tmp_path: Path
    ) -> None:
        (tmp_path / "primary").mkdir()
        (tmp_path / "replica").mkdir()
        primary = fresh_sqlite_url(sqlite_template, tmp_path / "primary")
        replica = fresh_sqlite_url(sqlite_template, tmp_path / "replica")
        factory = SqlUnitOfWorkFactory(primary, replica_urls=[replica])
        try:
            user = make_user()
            with factory() as uow:
                uow.users.add(user)
                uow.commit()
            with factory() as uow:  # writes and read-write units of work: the primary
                assert uow.users.get(user.id) == user
            with factory(read_only=True) as uow:  # read-only but not lag-tolerant: the primary
                assert uow.users.get(user.id) == user
            with factory(replica=True) as uow:  # the (lagging) replica has nothing yet
                assert uow.users.get(user.id) is None
        finally:
            factory.dispose()

    def test_unreachable_replica_falls_back_to_the_primary(
        self, sqlite_template: Path, tmp_path: Path
    ) -> None:
        primary = fresh_sqlite_url(sqlite_template, tmp_path)
        broken = f"sqlite:///{tmp_path / 'missing' / 'replica.db'}"
        factory = SqlUnitOfWorkFactory(primary, replica_urls=[broken])
        try:
            with factory(replica=True) as uow:
                assert uow.users.count() == 0
        finally:
            factory.dispose()

    def test_settings_replica_urls_are_used(self, tmp_path: Path) -> None:
        settings = Settings.for_tests(
            database_url=f"sqlite:///{tmp_path / 'p.db'}",
            database_read_replica_urls=f"sqlite:///{tmp_path / 'r1.db'},sqlite:///{tmp_path / 'r2.db'}",
        )
        factory = build_unit_of_work_factory(settings)
        try:
            assert len(factory.replicas) == 2
        finally:
            factory.dispose()


class TestErrorTranslation:
    @pytest.mark.parametrize("sqlstate", ["40001", "40P01"])
    def test_serialization_failures_and_deadlocks_are_transaction_conflicts(
        self, sqlstate: str
    ) -> None:
        from sqlalchemy.exc import OperationalError

        class DriverError(Exception):
            pass

        orig = DriverError("could not serialize access")
        orig.sqlstate = sqlstate  # type: ignore[attr-defined]
        error = OperationalError("UPDATE sessions ...", {}, orig)
        assert isinstance(translate(error), TransactionConflict)

    def test_injected_serialization_failure_on_postgres(
        self, pg_factory: SqlUnitOfWorkFactory, pg_contracts_url: str
    ) -> None:
        """A real 40001 from PostgreSQL comes out as TransactionConflict."""
        truncate_all(pg_contracts_url)
        with pg_factory() as uow:
            uow.users.add(make_user())
            uow.commit()
        first, second = pg_factory(), pg_factory()
        with first, second:
            for uow in (first, second):
                uow.execute(text("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"))
                uow.execute(text("SELECT count(*) FROM users"))
            first.users.add(make_user())
            first.execute(text("UPDATE users SET name = 'first'"), write=True)
            first.commit()

            def write_and_commit() -> None:
                second.execute(text("UPDATE users SET name = 'second'"), write=True)
                second.commit()

            with pytest.raises(TransactionConflict):
                write_and_commit()
