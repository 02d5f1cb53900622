"""The in-memory unit of work and its factory."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from types import TracebackType
from typing import Any, Self
from uuid import UUID

from usermgmt.backends.memory.auth_repositories import (
    MemoryAuditArchiveRepository,
    MemoryAuditLogRepository,
    MemoryOAuthAccountRepository,
    MemoryOneTimeTokenRepository,
    MemorySessionRepository,
)
from usermgmt.backends.memory.repositories import (
    MemoryOrganizationRepository,
    MemoryPermissionRepository,
    MemoryUserRepository,
)
from usermgmt.backends.memory.store import Journal, MemoryStore, detach
from usermgmt.backends.memory.tenancy_repositories import (
    MemoryInvitationRepository,
    MemoryMembershipRepository,
    MemoryRoleRepository,
)
from usermgmt.errors import TransactionConflict
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

__all__ = ["MemoryUnitOfWork", "MemoryUnitOfWorkFactory"]


def _creation(role: Role) -> tuple[datetime, UUID]:
    return role.created_at, role.id


def _lock(store: MemoryStore, timeout: float, lock_timeout: float | None) -> None:
    """Take the store's lock, waiting at most ``timeout`` seconds (-1: forever); raises
    TransactionConflict when it stays held (``lock_timeout`` is the setting, for the
    message)."""
    lock = store.lock
    # the usual case, a free lock, without the timed wait's argument parsing
    if not lock.acquire(False) and not lock.acquire(True, timeout):
        raise TransactionConflict(
            f"the memory store stayed locked for {lock_timeout} s: is another "
            "thread holding a unit of work open while it waits for this one?"
        )


_REPOSITORIES: dict[str, Callable[[MemoryUnitOfWork], object]] = {
    "users": MemoryUserRepository,
    "organizations": MemoryOrganizationRepository,
    "permissions": MemoryPermissionRepository,
    "roles": MemoryRoleRepository,
    "memberships": MemoryMembershipRepository,
    "invitations": MemoryInvitationRepository,
    "sessions": MemorySessionRepository,
    "tokens": MemoryOneTimeTokenRepository,
    "oauth_accounts": MemoryOAuthAccountRepository,
    "audit": MemoryAuditLogRepository,
    "audit_archive": MemoryAuditArchiveRepository,
}


class MemoryUnitOfWork:
    """One serialisable transaction on a :class:`MemoryStore`.

    ``with uow:`` takes the store-wide lock and holds it until the block ends, so
    transactions never interleave. Writes are applied in place and journaled;
    :meth:`rollback` (or leaving the block without :meth:`commit`, or on an
    exception) undoes everything written since the last commit. A unit of work
    may commit several times and may be entered again after it was left.

    A unit of work belongs to the thread that entered it. Because the lock is
    re-entrant, a second unit of work opened *in the same thread* while one is
    open sees the outer one's uncommitted writes, and its own commit is not
    undone by a later rollback of the outer one (jobs of a ``sync``
    :class:`~usermgmt.backends.memory.InlineQueue` rely on this not deadlocking).

    Raises :class:`RuntimeError` when a repository is used outside ``with uow:``,
    from another thread, or (for writes) in a ``read_only`` unit of work, and
    :class:`~usermgmt.errors.TransactionConflict` if the lock cannot be taken
    within ``lock_timeout`` seconds (a deadlock between threads in a test).
    """

    def __init__(
        self, store: MemoryStore, *, read_only: bool = False, lock_timeout: float | None = None
    ) -> None:
        self.store = store
        self.read_only = read_only
        self._lock_timeout = lock_timeout
        self._journal = Journal(store)
        self._owner: int | None = None

    # The repositories, each made on first use (most units of work use one or two).
    users: UserRepository
    organizations: OrganizationRepository
    permissions: PermissionRepository
    roles: RoleRepository
    memberships: MembershipRepository
    invitations: InvitationRepository
    sessions: SessionRepository
    tokens: OneTimeTokenRepository
    oauth_accounts: OAuthAccountRepository
    audit: AuditLogRepository
    audit_archive: AuditArchiveRepository

    def __getattr__(self, name: str) -> Any:
        make = _REPOSITORIES.get(name)
        if make is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        repository = make(self)
        setattr(self, name, repository)
        return repository

    # -- transaction protocol used by the repositories --------------------------------

    def reading(self) -> MemoryStore:
        """The store, for a read; raises RuntimeError outside ``with uow:``."""
        if self._owner != threading.get_ident():
            if self._owner is None:
                raise RuntimeError("use the repositories inside 'with uow:'")
            raise RuntimeError("this unit of work belongs to another thread")
        return self.store

    def writing(self) -> tuple[MemoryStore, Journal]:
        """The store and the journal, for a write; raises RuntimeError outside
        ``with uow:`` or in a read-only unit of work."""
        store = self.reading()
        if self.read_only:
            raise RuntimeError("this unit of work is read-only")
        return store, self._journal

    # -- UnitOfWork -------------------------------------------------------------------

    def __enter__(self) -> Self:
        if self._owner is not None:
            raise RuntimeError("this unit of work is already open")
        timeout = -1.0 if self._lock_timeout is None else self._lock_timeout
        _lock(self.store, timeout, self._lock_timeout)
        self._owner = self.store.writer = threading.get_ident()
        self.store.open_units += 1
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self._journal.undo()
        finally:
            self._owner = None
            self.store.open_units -= 1
            if not self.store.open_units:
                self.store.writer = None
            self.store.lock.release()

    def commit(self) -> None:
        """Make the writes since the last commit permanent."""
        self.reading()
        self._journal.forget()

    def rollback(self) -> None:
        """Undo the writes since the last commit; the unit of work stays open."""
        self.reading()
        self._journal.undo()


class MemoryUnitOfWorkFactory:
    """:class:`~usermgmt.ports.UnitOfWorkFactory` over one :class:`MemoryStore`.

    >>> uow_factory = MemoryUnitOfWorkFactory()
    >>> with uow_factory() as uow:
    ...     uow.users.count()
    0

    It also offers the per-request reads of :class:`~usermgmt.ports.OneStatementReads`
    (each one lock acquisition instead of a unit of work; there is no replica) and
    :meth:`member_roles_at` / :attr:`data_version`, with which the authorization service
    remembers answers for as long as nothing changed in the store.
    """

    #: There is no replica: every read sees the committed data.
    reads_from_replicas = False

    def __init__(self, store: MemoryStore | None = None, *, lock_timeout: float | None = 30.0):
        self.store = store if store is not None else MemoryStore()
        self.lock_timeout = lock_timeout
        self._timeout = -1.0 if lock_timeout is None else lock_timeout

    # -- the per-request reads ------------------------------------------------------------

    def _acquire(self) -> MemoryStore:
        store = self.store
        _lock(store, self._timeout, self.lock_timeout)
        return store

    def live_session_user(self, session_id: UUID, user_id: UUID) -> tuple[bool, User | None]:
        """(whether the session exists and is not revoked, a copy of the user or None)."""
        _, live, user = self.live_session_user_at(session_id, user_id)
        return live, user

    def live_session_user_at(
        self, session_id: UUID, user_id: UUID
    ) -> tuple[int | None, bool, User | None]:
        """:meth:`live_session_user` with the :attr:`data_version` the answer holds for
        (None when this thread has a unit of work open: see :meth:`member_roles_at`)."""
        store = self._acquire()
        try:
            version = None if store.open_units else store.version
            session = store.sessions.get(session_id)
            user = store.users.get(user_id)
        finally:
            store.lock.release()
        live = session is not None and session.revoked_at is None
        return version, live, None if user is None else detach(user)

    #: A copy of an entity read from the store that shares no mutable state with it (nor
    #: with any other copy): what the reads above return (see :func:`detach`).
    copy_of = staticmethod(detach)

    def user_by_id(self, user_id: UUID) -> User | None:
        """A copy of the user, or None."""
        store = self._acquire()
        try:
            user = store.users.get(user_id)
        finally:
            store.lock.release()
        return None if user is None else detach(user)

    def member_roles(self, organization_id: UUID, user_id: UUID) -> tuple[bool, list[Role]] | None:
        """None if the user is not a member of the organization, else (whether the user
        is active, the membership's roles there, ordered by creation)."""
        return self.member_roles_at(organization_id, user_id)[1]

    @property
    def data_version(self) -> int | None:
        """Changes with every commit or rollback that changed the store; None in a
        thread holding a unit of work open (it sees its own writes, maybe never
        committed: no answer remembered from committed data holds for it)."""
        store = self.store
        if store.writer is not None and store.writer == threading.get_ident():
            return None
        return store.version

    def member_roles_at(
        self, organization_id: UUID, user_id: UUID
    ) -> tuple[int | None, tuple[bool, list[Role]] | None]:
        """:meth:`member_roles`, with the :attr:`data_version` the answer is valid for:
        None when this thread has a unit of work open (whose writes, seen here, may not
        be committed yet)."""
        store = self._acquire()
        try:
            version = None if store.open_units else store.version
            membership_id = store.membership_index.get((organization_id, user_id))
            if membership_id is None:
                return version, None
            membership = store.memberships[membership_id]
            user = store.users.get(user_id)
            roles = store.roles
            found = [roles[i] for i in membership.role_ids if i in roles]
        finally:
            store.lock.release()
        mine = [role for role in found if role.organization_id == organization_id]
        mine.sort(key=_creation)
        return version, (user is not None and user.is_active, mine)

    def __call__(self, *, read_only: bool = False, replica: bool = False) -> MemoryUnitOfWork:
        """A new unit of work; ``read_only`` (and ``replica``: there is no replica) ones refuse writes."""
        return MemoryUnitOfWork(
            self.store, read_only=read_only or replica, lock_timeout=self.lock_timeout
        )

    def check(self) -> None:
        """Always reachable: does nothing."""
