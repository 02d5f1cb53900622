"""The in-memory unit of work and its factory."""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

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
from usermgmt.backends.memory.store import Journal, MemoryStore
from usermgmt.backends.memory.tenancy_repositories import (
    MemoryInvitationRepository,
    MemoryMembershipRepository,
    MemoryRoleRepository,
)
from usermgmt.errors import TransactionConflict
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
        self._journal = Journal()
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
        if not self.store.lock.acquire(timeout=timeout):
            raise TransactionConflict(
                f"the memory store stayed locked for {self._lock_timeout} s: is another "
                "thread holding a unit of work open while it waits for this one?"
            )
        self._owner = threading.get_ident()
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
    """

    def __init__(self, store: MemoryStore | None = None, *, lock_timeout: float | None = 30.0):
        self.store = store if store is not None else MemoryStore()
        self.lock_timeout = lock_timeout

    def __call__(self, *, read_only: bool = False, replica: bool = False) -> MemoryUnitOfWork:
        """A new unit of work; ``read_only`` (and ``replica``: there is no replica) ones refuse writes."""
        return MemoryUnitOfWork(
            self.store, read_only=read_only or replica, lock_timeout=self.lock_timeout
        )

    def check(self) -> None:
        """Always reachable: does nothing."""
