"""In-memory repositories for users, organizations and permissions, and what
every in-memory repository shares (roles, memberships and invitations live in
:mod:`usermgmt.backends.memory.tenancy_repositories`, the rest in
:mod:`usermgmt.backends.memory.auth_repositories`).

Each repository belongs to one :class:`~usermgmt.backends.memory.MemoryUnitOfWork`
and reaches the store through it, so using one outside ``with uow:`` raises
:class:`RuntimeError`. Entities with a ``metadata`` dict are deep-copied on the
way in and on the way out.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol
from uuid import UUID

from usermgmt.backends.memory.store import Journal, MemoryStore, detach, normalize_email
from usermgmt.errors import Conflict, EmailTaken, NotFound, SlugTaken
from usermgmt.models import Organization, Permission, User

__all__ = [
    "MemoryOrganizationRepository",
    "MemoryPermissionRepository",
    "MemoryUserRepository",
    "Transaction",
]


class Transaction(Protocol):
    """What a repository needs from its unit of work."""

    def reading(self) -> MemoryStore:
        """The store; raises RuntimeError outside ``with uow:``."""

    def writing(self) -> tuple[MemoryStore, Journal]:
        """The store and the undo journal; raises RuntimeError outside ``with uow:``
        or in a read-only unit of work."""


class _Repository:
    __slots__ = ("_tx",)

    def __init__(self, tx: Transaction) -> None:
        self._tx = tx


class MemoryUserRepository(_Repository):
    """:class:`~usermgmt.ports.UserRepository` on a :class:`MemoryStore`."""

    __slots__ = ()

    def add(self, user: User) -> None:
        """Insert; raises EmailTaken (case-insensitive) or Conflict for a duplicate id."""
        store, journal = self._tx.writing()
        if user.id in store.users:
            raise Conflict(f"user {user.id} exists")
        key = normalize_email(user.email)
        if key in store.user_email_index:
            raise EmailTaken()
        journal.put(store.users, user.id, detach(user))
        journal.put(store.user_email_index, key, user.id)

    def get(self, user_id: UUID, *, for_update: bool = False) -> User | None:
        """The user or None (every unit of work holds the store lock, so
        ``for_update`` needs nothing more)."""
        user = self._tx.reading().users.get(user_id)
        return None if user is None else detach(user)

    def get_by_email(self, email: str) -> User | None:
        store = self._tx.reading()
        user_id = store.user_email_index.get(normalize_email(email))
        return None if user_id is None else detach(store.users[user_id])

    def get_many(self, user_ids: Iterable[UUID]) -> list[User]:
        """The users among ``user_ids`` (each once, ordered by id); unknown ids skipped."""
        users = self._tx.reading().users
        return [detach(users[i]) for i in sorted(set(user_ids)) if i in users]

    def update(self, user: User) -> None:
        """Replace; raises NotFound if absent, EmailTaken if the email is another user's."""
        store, journal = self._tx.writing()
        old = store.users.get(user.id)
        if old is None:
            raise NotFound("user")
        old_key, new_key = normalize_email(old.email), normalize_email(user.email)
        if new_key != old_key:
            if new_key in store.user_email_index:
                raise EmailTaken()
            journal.delete(store.user_email_index, old_key)
            journal.put(store.user_email_index, new_key, user.id)
        journal.put(store.users, user.id, detach(user))

    def list(self, *, email_prefix: str | None, limit: int, after: UUID | None) -> list[User]:
        store = self._tx.reading()
        prefix = None if email_prefix is None else email_prefix.strip().lower()
        found: list[User] = []
        for user_id in sorted(store.users):
            if after is not None and user_id <= after:
                continue
            user = store.users[user_id]
            if prefix is not None and not user.email.lower().startswith(prefix):
                continue
            if len(found) >= limit:
                break
            found.append(detach(user))
        return found

    def count(self) -> int:
        return len(self._tx.reading().users)


class MemoryOrganizationRepository(_Repository):
    """:class:`~usermgmt.ports.OrganizationRepository` on a :class:`MemoryStore`."""

    __slots__ = ()

    def add(self, organization: Organization) -> None:
        """Insert; raises SlugTaken, or Conflict for a duplicate id."""
        store, journal = self._tx.writing()
        if organization.id in store.organizations:
            raise Conflict(f"organization {organization.id} exists")
        if organization.slug in store.organization_slug_index:
            raise SlugTaken()
        journal.put(store.organizations, organization.id, detach(organization))
        journal.put(store.organization_slug_index, organization.slug, organization.id)

    def get(self, organization_id: UUID, *, for_update: bool = False) -> Organization | None:
        org = self._tx.reading().organizations.get(organization_id)
        return None if org is None else detach(org)

    def get_by_slug(self, slug: str) -> Organization | None:
        store = self._tx.reading()
        org_id = store.organization_slug_index.get(slug)
        return None if org_id is None else detach(store.organizations[org_id])

    def update(self, organization: Organization) -> None:
        """Replace; raises NotFound if absent, SlugTaken on a slug conflict."""
        store, journal = self._tx.writing()
        old = store.organizations.get(organization.id)
        if old is None:
            raise NotFound("organization")
        if organization.slug != old.slug:
            if organization.slug in store.organization_slug_index:
                raise SlugTaken()
            journal.delete(store.organization_slug_index, old.slug)
            journal.put(store.organization_slug_index, organization.slug, organization.id)
        journal.put(store.organizations, organization.id, detach(organization))

    def delete(self, organization_id: UUID) -> None:
        """Delete with its roles, memberships and invitations; absent ids are ignored."""
        store, journal = self._tx.writing()
        org = store.organizations.get(organization_id)
        if org is None:
            return
        for role in [r for r in store.roles.values() if r.organization_id == organization_id]:
            journal.delete(store.roles, role.id)
            journal.delete(store.role_name_index, (organization_id, role.name))
        for m in [m for m in store.memberships.values() if m.organization_id == organization_id]:
            journal.delete(store.memberships, m.id)
            journal.delete(store.membership_index, (organization_id, m.user_id))
        for inv in [i for i in store.invitations.values() if i.organization_id == organization_id]:
            journal.delete(store.invitations, inv.id)
            journal.delete(store.invitation_token_index, inv.token_hash)
        journal.delete(store.organizations, organization_id)
        journal.delete(store.organization_slug_index, org.slug)

    def list_ids(self) -> list[UUID]:
        return sorted(self._tx.reading().organizations)


class MemoryPermissionRepository(_Repository):
    """:class:`~usermgmt.ports.PermissionRepository` on a :class:`MemoryStore`."""

    __slots__ = ()

    def ensure(self, permissions: Iterable[Permission]) -> None:
        """Insert the missing ones; existing permissions keep their description."""
        store, journal = self._tx.writing()
        for permission in permissions:
            if permission.name not in store.permissions:
                journal.put(store.permissions, permission.name, permission)

    def list(self) -> list[Permission]:
        perms = self._tx.reading().permissions
        return [perms[name] for name in sorted(perms)]
