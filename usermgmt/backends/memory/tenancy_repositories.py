"""In-memory repositories for roles, memberships and invitations. See
:mod:`usermgmt.backends.memory.repositories` for the shared rules."""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Iterable
from datetime import datetime
from uuid import UUID

from usermgmt.backends.memory.repositories import _Repository
from usermgmt.errors import AlreadyMember, Conflict, NotFound, RoleNameTaken
from usermgmt.models import Invitation, Membership, Role

__all__ = ["MemoryInvitationRepository", "MemoryMembershipRepository", "MemoryRoleRepository"]


class MemoryRoleRepository(_Repository):
    """:class:`~usermgmt.ports.RoleRepository` on a :class:`MemoryStore`."""

    __slots__ = ()

    def add(self, role: Role) -> None:
        """Insert; raises RoleNameTaken, or Conflict for a duplicate id."""
        store, journal = self._tx.writing()
        if role.id in store.roles:
            raise Conflict(f"role {role.id} exists")
        if (role.organization_id, role.name) in store.role_name_index:
            raise RoleNameTaken()
        journal.put(store.roles, role.id, role)
        journal.put(store.role_name_index, (role.organization_id, role.name), role.id)

    def get(self, organization_id: UUID, role_id: UUID) -> Role | None:
        role = self._tx.reading().roles.get(role_id)
        return role if role is not None and role.organization_id == organization_id else None

    def get_by_name(self, organization_id: UUID, name: str) -> Role | None:
        store = self._tx.reading()
        role_id = store.role_name_index.get((organization_id, name))
        return None if role_id is None else store.roles[role_id]

    def list(self, organization_id: UUID) -> list[Role]:
        roles = [
            r for r in self._tx.reading().roles.values() if r.organization_id == organization_id
        ]
        return sorted(roles, key=lambda r: (r.created_at, r.id))

    def get_many(self, organization_id: UUID, role_ids: Iterable[UUID]) -> builtins.list[Role]:
        """The roles of the organization among ``role_ids``, ordered by creation."""
        roles = self._tx.reading().roles
        found = {roles[i] for i in set(role_ids) if i in roles}
        return sorted(
            (r for r in found if r.organization_id == organization_id),
            key=lambda r: (r.created_at, r.id),
        )

    def update(self, role: Role) -> None:
        """Replace; raises NotFound if absent, RoleNameTaken on a name conflict."""
        store, journal = self._tx.writing()
        old = store.roles.get(role.id)
        if old is None:
            raise NotFound("role")
        old_key, new_key = (old.organization_id, old.name), (role.organization_id, role.name)
        if new_key != old_key:
            if new_key in store.role_name_index:
                raise RoleNameTaken()
            journal.delete(store.role_name_index, old_key)
            journal.put(store.role_name_index, new_key, role.id)
        journal.put(store.roles, role.id, role)

    def delete(self, organization_id: UUID, role_id: UUID) -> None:
        """Delete the role if it belongs to the organization; otherwise do nothing."""
        store, journal = self._tx.writing()
        role = store.roles.get(role_id)
        if role is None or role.organization_id != organization_id:
            return
        journal.delete(store.roles, role_id)
        journal.delete(store.role_name_index, (organization_id, role.name))

    def is_assigned(self, role_id: UUID) -> bool:
        """True if a membership or an unaccepted, unrevoked invitation holds the role
        (expired invitations count: they can still be listed and revoked)."""
        store = self._tx.reading()
        if any(role_id in m.role_ids for m in store.memberships.values()):
            return True
        return any(
            role_id in i.role_ids and i.accepted_at is None and i.revoked_at is None
            for i in store.invitations.values()
        )


class MemoryMembershipRepository(_Repository):
    """:class:`~usermgmt.ports.MembershipRepository` on a :class:`MemoryStore`."""

    __slots__ = ()

    def add(self, membership: Membership) -> None:
        """Insert; raises AlreadyMember, or Conflict for a duplicate id."""
        store, journal = self._tx.writing()
        if membership.id in store.memberships:
            raise Conflict(f"membership {membership.id} exists")
        key = (membership.organization_id, membership.user_id)
        if key in store.membership_index:
            raise AlreadyMember()
        journal.put(store.memberships, membership.id, membership)
        journal.put(store.membership_index, key, membership.id)

    def get(self, organization_id: UUID, user_id: UUID) -> Membership | None:
        store = self._tx.reading()
        membership_id = store.membership_index.get((organization_id, user_id))
        return None if membership_id is None else store.memberships[membership_id]

    def update(self, membership: Membership) -> None:
        """Replace (matched by id); raises NotFound if absent."""
        store, journal = self._tx.writing()
        old = store.memberships.get(membership.id)
        if old is None:
            raise NotFound("membership")
        if (old.organization_id, old.user_id) != (membership.organization_id, membership.user_id):
            raise ValueError("a membership cannot move to another organization or user")
        journal.put(store.memberships, membership.id, membership)

    def delete(self, organization_id: UUID, user_id: UUID) -> None:
        store, journal = self._tx.writing()
        membership_id = store.membership_index.get((organization_id, user_id))
        if membership_id is not None:
            journal.delete(store.memberships, membership_id)
            journal.delete(store.membership_index, (organization_id, user_id))

    def list_for_organization(
        self, organization_id: UUID, *, limit: int, after: UUID | None
    ) -> list[Membership]:
        found = [
            m
            for m in self._tx.reading().memberships.values()
            if m.organization_id == organization_id and (after is None or m.id > after)
        ]
        return sorted(found, key=lambda m: m.id)[: max(limit, 0)]

    def list_for_user(self, user_id: UUID) -> list[Membership]:
        found = [m for m in self._tx.reading().memberships.values() if m.user_id == user_id]
        return sorted(found, key=lambda m: m.id)

    def count_with_role(self, organization_id: UUID, role_id: UUID) -> int:
        return sum(
            1
            for m in self._tx.reading().memberships.values()
            if m.organization_id == organization_id and role_id in m.role_ids
        )


class MemoryInvitationRepository(_Repository):
    """:class:`~usermgmt.ports.InvitationRepository` on a :class:`MemoryStore`."""

    __slots__ = ()

    def add(self, invitation: Invitation) -> None:
        """Insert; raises Conflict for a duplicate id or token hash."""
        store, journal = self._tx.writing()
        if invitation.id in store.invitations:
            raise Conflict(f"invitation {invitation.id} exists")
        if invitation.token_hash in store.invitation_token_index:
            raise Conflict("invitation token hash exists")
        journal.put(store.invitations, invitation.id, invitation)
        journal.put(store.invitation_token_index, invitation.token_hash, invitation.id)

    def get(self, organization_id: UUID, invitation_id: UUID) -> Invitation | None:
        inv = self._tx.reading().invitations.get(invitation_id)
        return inv if inv is not None and inv.organization_id == organization_id else None

    def get_by_token_hash(self, token_hash: str) -> Invitation | None:
        store = self._tx.reading()
        invitation_id = store.invitation_token_index.get(token_hash)
        return None if invitation_id is None else store.invitations[invitation_id]

    def list_for_organization(
        self, organization_id: UUID, *, limit: int, after: UUID | None
    ) -> list[Invitation]:
        found = [
            i
            for i in self._tx.reading().invitations.values()
            if i.organization_id == organization_id and (after is None or i.id > after)
        ]
        return sorted(found, key=lambda i: i.id)[: max(limit, 0)]

    def accept(self, invitation_id: UUID, user_id: UUID, now: datetime) -> Invitation | None:
        """Atomic: mark accepted if pending and unexpired at ``now``; None otherwise."""
        store, journal = self._tx.writing()
        inv = store.invitations.get(invitation_id)
        if inv is None or inv.accepted_at is not None or inv.revoked_at is not None:
            return None
        if inv.expires_at <= now:
            return None
        accepted = dataclasses.replace(inv, accepted_at=now, accepted_by=user_id)
        journal.put(store.invitations, invitation_id, accepted)
        return accepted

    def revoke(self, invitation_id: UUID, now: datetime) -> Invitation | None:
        """Atomic: mark revoked if neither accepted nor revoked; None otherwise."""
        store, journal = self._tx.writing()
        inv = store.invitations.get(invitation_id)
        if inv is None or inv.accepted_at is not None or inv.revoked_at is not None:
            return None
        revoked = dataclasses.replace(inv, revoked_at=now)
        journal.put(store.invitations, invitation_id, revoked)
        return revoked
