"""Programmatic Alembic migrations, with the scripts shipped inside the package.

No ``alembic.ini`` is needed: :func:`alembic_config` builds the configuration in code
with ``script_location`` pointing at :mod:`usermgmt.backends.sqlalchemy.migrations`.
The ``alembic`` command line works too, with ``-c`` pointing at an ini file naming the
same ``script_location`` and ``sqlalchemy.url``.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.exc import SQLAlchemyError

from usermgmt.backends.sqlalchemy.engine import READ_ONLY_OPTION, build_engine
from usermgmt.backends.sqlalchemy.errors import raise_translated

__all__ = [
    "MIGRATIONS_PATH",
    "alembic_config",
    "current",
    "downgrade",
    "heads",
    "revisions",
    "upgrade",
]

#: The folder of ``env.py`` and ``versions/``.
MIGRATIONS_PATH = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str | None = None) -> Config:
    """An Alembic configuration for the packaged scripts; ``url`` is the database to
    migrate (passed to ``env.py`` as ``config.attributes["url"]``, never through the
    ini interpolation, so passwords with ``%`` work)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_PATH).replace("%", "%%"))
    if url is not None:
        config.attributes["url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` up to ``revision`` (default: the newest).

    Raises BackendUnavailable when the database cannot be reached.
    """
    try:
        command.upgrade(alembic_config(url), revision)
    except SQLAlchemyError as exc:
        raise_translated(exc)


def downgrade(url: str, revision: str) -> None:
    """Migrate the database at ``url`` down to ``revision`` (``"base"``: an empty schema,
    ``"-1"``: one step back). Raises BackendUnavailable when it cannot be reached."""
    try:
        command.downgrade(alembic_config(url), revision)
    except SQLAlchemyError as exc:
        raise_translated(exc)


def current(url: str) -> str | None:
    """The revision the database at ``url`` is at; None for an unmigrated database.

    Raises BackendUnavailable when the database cannot be reached.
    """
    engine = build_engine(url)
    try:
        with engine.connect() as connection:
            connection.execution_options(**{READ_ONLY_OPTION: True})
            return MigrationContext.configure(connection).get_current_revision()
    except SQLAlchemyError as exc:
        raise_translated(exc)
    finally:
        engine.dispose()


def heads() -> list[str]:
    """The newest revision(s) of the packaged scripts."""
    return list(ScriptDirectory.from_config(alembic_config()).get_heads())


def revisions() -> list[str]:
    """Every packaged revision, oldest first."""
    script = ScriptDirectory.from_config(alembic_config())
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]
