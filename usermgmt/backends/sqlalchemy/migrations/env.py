"""Alembic environment of usermgmt: migrates the database named by the configuration.

The database comes from ``config.attributes["connection"]`` (a SQLAlchemy Connection
handed in by the caller), else ``config.attributes["url"]`` (what
:mod:`usermgmt.backends.sqlalchemy.migrate` passes), else the ini's ``sqlalchemy.url``.
URLs go through usermgmt's engine builder, so ``postgresql://`` means psycopg 3 and
SQLite gets its pragmas.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from usermgmt.backends.sqlalchemy.engine import build_engine, parse_url
from usermgmt.backends.sqlalchemy.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database to migrate: pass a URL (usermgmt db migrate)")
    return str(url)


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters by copying
        compare_type=True,
    )


def run_offline() -> None:
    """Emit the SQL instead of running it (``alembic upgrade --sql``)."""
    context.configure(
        url=parse_url(_url()).url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    given: Connection | None = config.attributes.get("connection")
    if given is not None:
        _configure(given)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = build_engine(_url())
    try:
        with engine.connect() as connection:
            _configure(connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
