"""The ``usermgmt`` command line (``usermgmt …`` or ``python -m usermgmt …``).

::

    usermgmt check-config                 # validate the settings from the environment
    usermgmt db migrate [--to REVISION]   # upgrade the schema (default: the newest)
    usermgmt db rollback [--to REVISION]  # downgrade one revision (or to REVISION / base)
    usermgmt db seed                      # permissions and system roles (idempotent)
    usermgmt db current                   # the revision the database is at, or "none"
    usermgmt create-superuser --email E [--name N]
    usermgmt worker [email|audit-archive|all]   # RQ worker (QUEUE_BACKEND=rq)
    usermgmt schedule [--once]            # queue the daily audit archive
    usermgmt audit archive [--dry-run]    # archive old audit events (see cli_audit)
    usermgmt audit verify [--org ID]      # check the audit hash chains (exit 1 on a break)
    usermgmt audit export --org ID [--since T] [--until T]   # JSON Lines

Settings come from the environment (and ``./.env``), as for the application. The
superuser's password is read from ``USERMGMT_SUPERUSER_PASSWORD`` or asked twice on a
terminal, never taken from the command line. Every expected failure (bad settings, an
unreachable database, an unknown revision, a taken email, a weak password) prints one
line ``usermgmt: error: …`` on stderr and exits with status 2, without a traceback.

Importing this module imports neither SQLAlchemy nor Alembic: commands import them.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from usermgmt.errors import (
    BackendError,
    BackendUnavailable,
    ConfigurationError,
    UserMgmtError,
    ValidationError,
)

if TYPE_CHECKING:
    from usermgmt.app import UserManagement
    from usermgmt.config import Settings

__all__ = ["PASSWORD_ENV", "CliError", "main"]

#: The environment variable ``create-superuser`` reads the password from.
PASSWORD_ENV = "USERMGMT_SUPERUSER_PASSWORD"

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


class CliError(Exception):
    """A failure the command explains in one line (exit status 2)."""


# --- output -----------------------------------------------------------------------------


class _StderrHandler(logging.Handler):
    """Library warnings as ``usermgmt: warning: …`` lines on the current ``sys.stderr``."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = " ".join(self.format(record).split())
            print(f"usermgmt: {record.levelname.lower()}: {message}", file=sys.stderr)
        except Exception:  # pragma: no cover - logging must never break a command
            self.handleError(record)


class _NoRandomSecretWarning(logging.Filter):
    """Commands that issue no tokens do not care that JWT secrets are random."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is not set: using a random per-process secret" not in record.getMessage()


@contextmanager
def _cli_logging() -> Iterator[None]:
    logger = logging.getLogger("usermgmt")
    handler = _StderrHandler(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _first_line(text: object) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else ""


# --- settings and database --------------------------------------------------------------


def _settings(*, quiet_secrets: bool = True) -> Settings:
    from usermgmt.config import Settings

    quiet = _NoRandomSecretWarning()
    config_logger = logging.getLogger("usermgmt.config")
    if quiet_secrets:
        config_logger.addFilter(quiet)
    try:
        return Settings()
    finally:
        config_logger.removeFilter(quiet)


def _sql_url(settings: Settings) -> str:
    url = settings.database_url
    if url.startswith("memory:"):
        raise ConfigurationError(
            "DATABASE_URL is memory://: the database commands need PostgreSQL or SQLite"
        )
    return url


@contextmanager
def _database(url: str) -> Iterator[None]:
    """Turn "the database is unavailable" into a line naming it (password hidden)."""
    try:
        yield
    except BackendUnavailable as exc:
        cause = exc.__cause__
        if cause is None:  # e.g. conflicts that persisted through the retries
            raise CliError(f"the database at {_redact(url)}: {exc.detail}") from exc
        reason = _first_line(getattr(cause, "orig", None) or cause) or exc.detail
        raise CliError(f"cannot reach the database at {_redact(url)}: {reason}") from exc


def _redact(url: str) -> str:
    from usermgmt.backends.sqlalchemy.engine import redact

    return redact(url)


def _require_head(url: str) -> None:
    """CliError unless the database is migrated to the newest packaged revision."""
    from usermgmt.backends.sqlalchemy import migrate

    current = migrate.current(url)
    heads = migrate.heads()
    if current is None:
        raise CliError(
            f"the database at {_redact(url)} has no usermgmt schema: "
            "run 'usermgmt db migrate' first"
        )
    if current not in heads:
        raise CliError(
            f"the database is at revision {current}, not the newest ({', '.join(heads)}): "
            "run 'usermgmt db migrate' first"
        )


def _build(settings: Settings) -> UserManagement:
    from usermgmt.app import UserManagement

    return UserManagement(settings)


# --- commands ---------------------------------------------------------------------------


def _check_config(args: argparse.Namespace) -> int:
    settings = _settings(quiet_secrets=False)
    print(f"settings are valid (environment={settings.environment})")
    return 0


def _db_current(args: argparse.Namespace) -> int:
    from usermgmt.backends.sqlalchemy import migrate

    url = _sql_url(_settings())
    with _database(url):
        revision = migrate.current(url)
    print(revision or "none")
    return 0


def _db_migrate(args: argparse.Namespace) -> int:
    from usermgmt.backends.sqlalchemy import migrate

    url = _sql_url(_settings())
    with _database(url):
        before = migrate.current(url)
        migrate.upgrade(url, args.to)
        after = migrate.current(url)
    if before == after:
        print(f"database at {after or 'none'}: nothing to migrate")
    else:
        print(f"migrated {_redact(url)}: {before or 'none'} -> {after or 'none'}")
    return 0


def _db_rollback(args: argparse.Namespace) -> int:
    from usermgmt.backends.sqlalchemy import migrate

    url = _sql_url(_settings())
    with _database(url):
        before = migrate.current(url)
        if before is None:
            raise CliError("nothing to roll back: the database has no usermgmt schema")
        migrate.downgrade(url, args.to or "-1")
        after = migrate.current(url)
    if before == after:
        print(f"database at {after}: nothing to roll back")
    else:
        print(f"rolled back {_redact(url)}: {before} -> {after or 'none'}")
    return 0


def _catalogue(um: UserManagement) -> tuple[set[str], int]:
    """The stored permission names and the number of system roles (two queries)."""
    from sqlalchemy import func, select

    from usermgmt.backends.sqlalchemy import SqlUnitOfWorkFactory
    from usermgmt.backends.sqlalchemy.models import RoleRow, table_of

    factory = um.backends.uow
    if not isinstance(factory, SqlUnitOfWorkFactory):  # pragma: no cover - SQL URLs only
        raise CliError("the database commands need PostgreSQL or SQLite")
    names = {p.name for p in um.kernel.read(lambda uow: uow.permissions.list())}
    roles = table_of(RoleRow)
    count = select(func.count()).select_from(roles).where(roles.c.is_system)
    with factory.engine.connect() as connection:
        system_roles = int(connection.execute(count).scalar_one())
    return names, system_roles


def _db_seed(args: argparse.Namespace) -> int:
    settings = _settings()
    url = _sql_url(settings)
    with _database(url):
        _require_head(url)
        um = _build(settings)
        try:
            names_before, roles_before = _catalogue(um)
            um.seed()
            names_after, roles_after = _catalogue(um)
        finally:
            um.close()
    added = sorted(names_after - names_before)
    for name in added:
        print(f"added permission {name}")
    if roles_after > roles_before:
        print(f"added {roles_after - roles_before} system role(s) to existing organizations")
    if not added and roles_after == roles_before:
        print(
            f"nothing to seed: {len(names_after)} permissions and every system role exist already"
        )
    else:
        print(f"seeded: {len(names_after)} permissions, {roles_after} system roles")
    return 0


def _read_password() -> str:
    given = os.environ.get(PASSWORD_ENV)
    if given is not None:
        return given
    if not sys.stdin.isatty():
        raise CliError(f"no password: set {PASSWORD_ENV} or run the command on a terminal")
    first = getpass.getpass("Password: ")
    second = getpass.getpass("Password (again): ")
    if first != second:
        raise CliError("the passwords do not match")
    return first


def _create_superuser(args: argparse.Namespace) -> int:
    settings = _settings()
    url = _sql_url(settings)
    with _database(url):
        _require_head(url)  # before asking for a password that could not be used
        password = _read_password()
        um = _build(settings)
        try:
            user = um.admin.create_superuser(args.email, password, name=args.name)
        finally:
            um.close()
    print(f"created superuser {user.email} ({user.id})")
    return 0


# --- parser and entry point -------------------------------------------------------------

Command = Callable[[argparse.Namespace], int]


def _parser() -> argparse.ArgumentParser:
    from usermgmt import __version__

    parser = argparse.ArgumentParser(
        prog="usermgmt",
        description="usermgmt administration; settings come from the environment",
    )
    parser.add_argument("--version", action="version", version=f"usermgmt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = sub.add_parser("check-config", help="validate the settings read from the environment")
    check.set_defaults(run=_check_config)

    db = sub.add_parser("db", help="database schema and seed data")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    migrate = db_sub.add_parser("migrate", help="upgrade the schema to the newest revision")
    migrate.add_argument(
        "--to", metavar="REVISION", default="head", help="stop at this revision (default: head)"
    )
    migrate.set_defaults(run=_db_migrate)
    rollback = db_sub.add_parser("rollback", help="downgrade the schema one revision")
    rollback.add_argument(
        "--to",
        metavar="REVISION",
        help="downgrade to this revision instead; 'base' drops every usermgmt table",
    )
    rollback.set_defaults(run=_db_rollback)
    seed = db_sub.add_parser(
        "seed", help="store the permission catalogue and missing system roles (idempotent)"
    )
    seed.set_defaults(run=_db_seed)
    current = db_sub.add_parser("current", help='print the current revision, or "none"')
    current.set_defaults(run=_db_current)

    superuser = sub.add_parser(
        "create-superuser",
        help=f"create a verified platform superuser (password from {PASSWORD_ENV} or a prompt)",
    )
    superuser.add_argument("--email", required=True)
    superuser.add_argument("--name", default=None)
    superuser.set_defaults(run=_create_superuser)

    from usermgmt.backends.queue.commands import add_commands as add_queue_commands

    add_queue_commands(sub)  # worker, schedule (QUEUE_BACKEND=rq)
    from usermgmt.cli_audit import add_commands as add_audit_commands

    add_audit_commands(sub)  # audit archive|verify|export
    return parser


def _describe(exc: BaseException) -> str | None:
    """The one-line message for an expected failure; None for anything else (a bug)."""
    if isinstance(exc, CliError):
        return _one_line(str(exc))
    if isinstance(exc, UserMgmtError):
        detail = exc.detail
        if isinstance(exc, ValidationError) and exc.errors:
            fields = "; ".join(
                f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}".strip(": ")
                for e in exc.errors
            )
            detail = f"{exc.title}: {fields}"
        if isinstance(exc, BackendError) and exc.__cause__ is not None:
            cause = exc.__cause__
            reason = _first_line(getattr(cause, "orig", None) or cause)
            if reason:
                detail = f"{detail.rstrip('.')} ({reason})"
        return _one_line(detail)
    alembic_exc = sys.modules.get("alembic.util.exc")
    if alembic_exc is not None and isinstance(exc, alembic_exc.CommandError):
        message = _first_line(exc)
        if "locate revision" in message or "No such revision" in message:
            message += " (see 'usermgmt db current'; 'head', 'base' and steps like -1 also work)"
        return _one_line(message)
    sa_exc = sys.modules.get("sqlalchemy.exc")
    if sa_exc is not None and isinstance(exc, sa_exc.SQLAlchemyError):
        reason = _first_line(getattr(exc, "orig", None) or exc)
        return _one_line(f"database error: {reason}")
    if isinstance(exc, OSError):
        return _one_line(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; returns the process exit code."""
    args = _parser().parse_args(argv)
    run: Command = args.run
    with _cli_logging():
        try:
            return run(args)
        except KeyboardInterrupt:
            print("usermgmt: error: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except Exception as exc:
            message = _describe(exc)
            if message is None:
                raise
            print(f"usermgmt: error: {message}", file=sys.stderr)
            return EXIT_ERROR
