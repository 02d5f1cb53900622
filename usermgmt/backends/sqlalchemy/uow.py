"""The SQL unit of work and its factory (primary plus optional read replicas)."""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar
from uuid import UUID

from sqlalchemy import (
    Connection,
    CursorResult,
    Engine,
    Executable,
    Select,
    literal_column,
    select,
)
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from usermgmt.backends.sqlalchemy import hot
from usermgmt.backends.sqlalchemy.engine import (
    READ_ONLY_OPTION,
    build_engine,
    connect_first,
    redact,
)
from usermgmt.backends.sqlalchemy.errors import raise_translated
from usermgmt.backends.sqlalchemy.repositories import (
    SqlAuditArchiveRepository,
    SqlAuditLogRepository,
    SqlInvitationRepository,
    SqlMembershipRepository,
    SqlOAuthAccountRepository,
    SqlOneTimeTokenRepository,
    SqlOrganizationRepository,
    SqlPermissionRepository,
    SqlRoleRepository,
    SqlSessionRepository,
    SqlUserRepository,
)
from usermgmt.errors import BackendUnavailable, UserMgmtError
from usermgmt.models import Role, User
from usermgmt.ports import (
    AuditArchiveRepository,
    AuditLogRepository,
    InvitationRepository,
    MembershipRepository,
    OAuthAccountRepository,
    OneTimeTokenRepository,
    OrganizationRepository,
    PermissionRepository,
    RoleRepository,
    SessionRepository,
    UserRepository,
)

__all__ = ["SqlUnitOfWork", "SqlUnitOfWorkFactory"]

logger = logging.getLogger("usermgmt.sql")

T = TypeVar("T")

_SELECT_1: Select[Any] = select(literal_column("1"))


class SqlUnitOfWork:
    """One database transaction on one pooled connection.

    ``with uow:`` checks a connection out; the transaction begins with the first
    statement (``BEGIN IMMEDIATE`` on SQLite unless read-only). :meth:`commit` may be
    called several times; leaving the block rolls back whatever was not committed and
    returns the connection. Repositories raise RuntimeError outside the block, and for
    writes in a ``read_only`` unit of work (which PostgreSQL also runs ``READ ONLY``).
    Database errors come out translated (see :mod:`usermgmt.backends.sqlalchemy.errors`).
    """

    def __init__(self, engines: Sequence[Engine], *, read_only: bool = False) -> None:
        if not engines:
            raise ValueError("a unit of work needs at least one engine")
        self._engines = tuple(engines)  # tried in order: a replica first, then the primary
        self.read_only = read_only
        self._connection: Connection | None = None
        self._fresh = False  # nothing sent yet on the connection (see _run)
        self._dialect_name = engines[0].dialect.name
        self.users: UserRepository = SqlUserRepository(self)
        self.organizations: OrganizationRepository = SqlOrganizationRepository(self)
        self.permissions: PermissionRepository = SqlPermissionRepository(self)
        self.roles: RoleRepository = SqlRoleRepository(self)
        self.memberships: MembershipRepository = SqlMembershipRepository(self)
        self.invitations: InvitationRepository = SqlInvitationRepository(self)
        self.sessions: SessionRepository = SqlSessionRepository(self)
        self.tokens: OneTimeTokenRepository = SqlOneTimeTokenRepository(self)
        self.oauth_accounts: OAuthAccountRepository = SqlOAuthAccountRepository(self)
        self.audit: AuditLogRepository = SqlAuditLogRepository(self)
        self.audit_archive: AuditArchiveRepository = SqlAuditArchiveRepository(self)

    # -- the transaction protocol of the repositories ----------------------------------

    @property
    def dialect_name(self) -> str:
        return self._dialect_name

    def _open(self) -> Connection:
        if self._connection is None:
            raise RuntimeError("use the repositories inside 'with uow:'")
        return self._connection

    def _run(self, work: Callable[[Connection], T]) -> T:
        """``work(connection)`` with database errors translated.

        Pooled connections are not pinged before use (a round trip per unit of work).
        Instead, when the first statement of the unit of work finds its connection dead
        (a server restart or failover since it was pooled), SQLAlchemy discards it and
        every older pooled connection, and the statement runs once more on a fresh one:
        nothing was sent in this transaction yet, so nothing can be lost or doubled.
        """
        connection = self._open()
        fresh, self._fresh = self._fresh, False
        try:
            return work(connection)
        except DBAPIError as exc:
            if not (fresh and exc.connection_invalidated):
                raise_translated(exc)
        except SQLAlchemyError as exc:
            raise_translated(exc)
        logger.info("database connection lost while pooled; retrying on a new one")
        with contextlib.suppress(SQLAlchemyError):
            connection.close()
        self._connection = None
        self._connection = connection = self._checkout()
        try:
            return work(connection)
        except SQLAlchemyError as exc:
            raise_translated(exc)

    def execute(self, statement: Executable, *, write: bool = False) -> CursorResult[Any]:
        """Run ``statement`` in the transaction; database errors come out translated."""
        if write and self.read_only:
            self._open()
            raise RuntimeError("this unit of work is read-only")
        return self._run(lambda connection: connection.execute(statement))

    def execute_guarded(self, statement: Executable) -> int:
        """Run a write that may break a constraint; the rows it matched.

        On PostgreSQL a failed statement aborts the whole transaction, so the statement
        runs in a savepoint: a translated EmailTaken (say) leaves the unit of work usable,
        as with the other backends. SQLite undoes just the failed statement by itself.
        """
        self._open()
        if self.read_only:
            raise RuntimeError("this unit of work is read-only")
        if self._dialect_name != "postgresql":
            return self._run(lambda connection: connection.execute(statement).rowcount)

        def guarded(connection: Connection) -> int:
            with connection.begin_nested():
                return connection.execute(statement).rowcount

        return self._run(guarded)

    # -- UnitOfWork ------------------------------------------------------------------------

    def __enter__(self) -> Self:
        if self._connection is not None:
            raise RuntimeError("this unit of work is already open")
        self._connection = self._checkout()
        self._fresh = True
        return self

    def _checkout(self) -> Connection:
        connection = connect_first(self._engines)
        if self.read_only:
            options: dict[str, Any] = {READ_ONLY_OPTION: True}
            if connection.dialect.name == "postgresql":
                options["postgresql_readonly"] = True
            connection.execution_options(**options)
        return connection

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            connection.rollback()
        except SQLAlchemyError as cleanup_error:
            connection.invalidate()  # never hand a connection in an unknown state back
            if exc is None:
                raise_translated(cleanup_error)
            logger.warning("rollback failed after an error: %s", type(cleanup_error).__name__)
        finally:
            connection.close()

    def commit(self) -> None:
        """Commit the writes since the last commit; the unit of work stays open."""
        connection = self._open()
        self._fresh = False
        try:
            connection.commit()
        except SQLAlchemyError as exc:
            raise_translated(exc)

    def rollback(self) -> None:
        """Undo the writes since the last commit; the unit of work stays open."""
        connection = self._open()
        try:
            connection.rollback()
        except SQLAlchemyError as exc:
            raise_translated(exc)


class SqlUnitOfWorkFactory:
    """:class:`~usermgmt.ports.UnitOfWorkFactory` on PostgreSQL or SQLite.

    Writes go to the primary ``url``; read-only units of work go to the
    ``replica_urls`` in turn (falling back to the primary when one cannot be reached).
    Engines connect lazily. Call :meth:`dispose` to close the pools.

    Raises ConfigurationError for an unusable URL and MissingDependency without psycopg.
    """

    def __init__(self, url: str, *, replica_urls: Sequence[str] = (), echo: bool = False) -> None:
        self.engine = build_engine(url, echo=echo)
        self.replicas = tuple(build_engine(u, echo=echo) for u in replica_urls)
        self._turn = itertools.count()
        self._turn_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SqlUnitOfWorkFactory({redact(self.engine.url)!r}, replicas={len(self.replicas)})"

    @property
    def dialect_name(self) -> str:
        """``postgresql`` or ``sqlite``."""
        return self.engine.dialect.name

    def __call__(self, *, read_only: bool = False, replica: bool = False) -> SqlUnitOfWork:
        """A new unit of work. ``read_only`` ones refuse writes and start a plain (not
        IMMEDIATE) transaction; ``replica`` ones are served by a replica when there is one."""
        if not replica or not self.replicas:
            return SqlUnitOfWork([self.engine], read_only=read_only or replica)
        return SqlUnitOfWork(self._replica_engines(), read_only=True)

    def _replica_engines(self) -> tuple[Engine, ...]:
        """The next replica in turn, then the primary (or the primary alone)."""
        if not self.replicas:
            return (self.engine,)
        with self._turn_lock:
            turn = next(self._turn)
        return (self.replicas[turn % len(self.replicas)], self.engine)

    # -- OneStatementReads: one autocommit SELECT each (see usermgmt.backends.sqlalchemy.hot)

    @property
    def reads_from_replicas(self) -> bool:
        """Whether :meth:`user_by_id` may be served by a read replica."""
        return bool(self.replicas)

    def live_session_user(self, session_id: UUID, user_id: UUID) -> tuple[bool, User | None]:
        """(whether the session exists unrevoked, the user or None), read on the primary."""
        params = {"session_id": session_id, "user_id": user_id}
        return hot.session_user(hot.rows((self.engine,), hot.SESSION_USER, params))

    def user_by_id(self, user_id: UUID) -> User | None:
        """The user or None, from a replica when there is one."""
        return hot.user_by_id(hot.rows(self._replica_engines(), hot.USER, {"user_id": user_id}))

    def member_roles(self, organization_id: UUID, user_id: UUID) -> tuple[bool, list[Role]] | None:
        """None for a non-member, else (the user is active, the membership's roles)."""
        params = {"organization_id": organization_id, "user_id": user_id}
        return hot.member_roles(hot.rows((self.engine,), hot.MEMBER_ROLES, params))

    def check(self) -> None:
        """Run ``SELECT 1`` on the primary; raises BackendUnavailable when it fails."""
        try:
            hot.rows((self.engine,), _SELECT_1, {})
        except BackendUnavailable:
            raise
        except (UserMgmtError, SQLAlchemyError, OSError) as exc:
            raise BackendUnavailable("The database is unavailable.") from exc

    def dispose(self) -> None:
        """Close every pooled connection (of the primary and the replicas)."""
        for engine in (self.engine, *self.replicas):
            engine.dispose()
