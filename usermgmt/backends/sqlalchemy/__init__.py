"""SQL storage on PostgreSQL (psycopg 3) and SQLite, with Alembic migrations.

Chosen by the registry for ``postgresql://`` and ``sqlite://`` database URLs::

    from usermgmt.backends.sqlalchemy import SqlUnitOfWorkFactory, migrate

    migrate.upgrade("sqlite:///./usermgmt.db")
    uow_factory = SqlUnitOfWorkFactory("sqlite:///./usermgmt.db")

Importing :mod:`usermgmt` never imports this package (nor SQLAlchemy).
"""

from __future__ import annotations

from usermgmt.backends.sqlalchemy.attempts import SqlAttemptCounter
from usermgmt.backends.sqlalchemy.engine import build_engine, parse_url
from usermgmt.backends.sqlalchemy.uow import SqlUnitOfWork, SqlUnitOfWorkFactory
from usermgmt.config import Settings
from usermgmt.ports import Clock

__all__ = [
    "SqlAttemptCounter",
    "SqlUnitOfWork",
    "SqlUnitOfWorkFactory",
    "build_attempt_counter",
    "build_engine",
    "build_unit_of_work_factory",
    "parse_url",
]


def build_unit_of_work_factory(settings: Settings) -> SqlUnitOfWorkFactory:
    """The unit-of-work factory for ``DATABASE_URL`` and ``DATABASE_READ_REPLICA_URLS``.

    Raises ConfigurationError for an unusable URL and MissingDependency without psycopg.
    """
    return SqlUnitOfWorkFactory(
        settings.database_url, replica_urls=tuple(settings.database_read_replica_urls)
    )


def build_attempt_counter(
    factory: SqlUnitOfWorkFactory, settings: Settings, clock: Clock
) -> SqlAttemptCounter:
    """The login lockout counter in the database of ``factory`` (on its primary's pool):
    the counter without Redis, the backstop while Redis fails (SECURITY.md F1)."""
    return SqlAttemptCounter(
        factory.engine,
        clock,
        max_failures=settings.login_max_failures,
        lockout_seconds=settings.login_lockout_seconds,
        max_lockout_seconds=settings.login_lockout_max_seconds,
    )
