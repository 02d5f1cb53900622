"""SQL repositories for roles (with their permissions) and memberships (with their roles).

A role's permission names and a membership's role ids live in link tables; each read
fetches the entities and their links with one ``LEFT JOIN`` query (no N+1).
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from typing import Any
from uuid import UUID

from sqlalchemy import (
    RowMapping,
    Select,
    Uuid,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)

from usermgmt.backends.sqlalchemy.models import (
    InvitationRoleRow,
    InvitationRow,
    MembershipRoleRow,
    MembershipRow,
    PermissionRow,
    RolePermissionRow,
    RoleRow,
    table_of,
)
from usermgmt.backends.sqlalchemy.repositories._base import (
    SqlRepository,
    group_by_id,
    insert_ignore,
)
from usermgmt.errors import NotFound
from usermgmt.ids import new_id
from usermgmt.models import Membership, Role

__all__ = ["SqlMembershipRepository", "SqlRoleRepository"]

ROLES = table_of(RoleRow)
ROLE_PERMISSIONS = table_of(RolePermissionRow)
PERMISSIONS = table_of(PermissionRow)
MEMBERSHIPS = table_of(MembershipRow)
MEMBERSHIP_ROLES = table_of(MembershipRoleRow)
INVITATIONS = table_of(InvitationRow)
INVITATION_ROLES = table_of(InvitationRoleRow)

_ROLE_WITH_PERMISSIONS = select(ROLES, PERMISSIONS.c.name.label("permission")).select_from(
    ROLES.outerjoin(ROLE_PERMISSIONS, ROLE_PERMISSIONS.c.role_id == ROLES.c.id).outerjoin(
        PERMISSIONS, PERMISSIONS.c.id == ROLE_PERMISSIONS.c.permission_id
    )
)
_MEMBERSHIP_WITH_ROLES = select(MEMBERSHIPS, MEMBERSHIP_ROLES.c.role_id).select_from(
    MEMBERSHIPS.outerjoin(MEMBERSHIP_ROLES, MEMBERSHIP_ROLES.c.membership_id == MEMBERSHIPS.c.id)
)


def _role(row: RowMapping, permissions: frozenset[str]) -> Role:
    return Role(
        id=row["id"],
        organization_id=row["organization_id"],
        name=row["name"],
        permissions=permissions,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        description=row["description"],
        is_system=row["is_system"],
    )


def _membership(row: RowMapping, role_ids: frozenset[UUID]) -> Membership:
    return Membership(
        id=row["id"],
        organization_id=row["organization_id"],
        user_id=row["user_id"],
        role_ids=role_ids,
        joined_at=row["joined_at"],
        updated_at=row["updated_at"],
        version=row["version"],
    )


class SqlRoleRepository(SqlRepository):
    """:class:`~usermgmt.ports.RoleRepository` in SQL.

    Saving a role with a permission name the catalogue lacks inserts it (an application
    may register permissions after seeding).
    """

    __slots__ = ()

    def _fetch(self, statement: Select[Any]) -> list[Role]:
        rows = self._tx.execute(statement.order_by(ROLES.c.created_at, ROLES.c.id))
        return [_role(row, names) for row, names in group_by_id(rows, "permission")]

    def _set_permissions(self, role_id: UUID, names: Iterable[str], *, replace: bool) -> None:
        tx = self._tx
        if replace:
            tx.execute(
                delete(ROLE_PERMISSIONS).where(ROLE_PERMISSIONS.c.role_id == role_id), write=True
            )
        wanted = sorted(set(names))
        if not wanted:
            return
        missing = [
            {"id": new_id(), "name": name, "description": "", "is_system": False} for name in wanted
        ]
        tx.execute(
            insert_ignore(tx.dialect_name, PERMISSIONS, ["name"]).values(missing), write=True
        )
        links = select(literal(role_id, Uuid()), PERMISSIONS.c.id).where(
            PERMISSIONS.c.name.in_(wanted)
        )
        tx.execute(
            insert(ROLE_PERMISSIONS).from_select(["role_id", "permission_id"], links), write=True
        )

    def add(self, role: Role) -> None:
        """Insert; raises RoleNameTaken, or Conflict for a duplicate id."""
        values = {c.name: getattr(role, c.name) for c in ROLES.columns}
        self._tx.execute_guarded(insert(ROLES).values(values))
        self._set_permissions(role.id, role.permissions, replace=False)

    def get(self, organization_id: UUID, role_id: UUID) -> Role | None:
        found = self._fetch(
            _ROLE_WITH_PERMISSIONS.where(
                ROLES.c.id == role_id, ROLES.c.organization_id == organization_id
            )
        )
        return found[0] if found else None

    def get_by_name(self, organization_id: UUID, name: str) -> Role | None:
        found = self._fetch(
            _ROLE_WITH_PERMISSIONS.where(
                ROLES.c.organization_id == organization_id, ROLES.c.name == name
            )
        )
        return found[0] if found else None

    def list(self, organization_id: UUID) -> list[Role]:
        """Roles of the organization by creation time (then id)."""
        return self._fetch(_ROLE_WITH_PERMISSIONS.where(ROLES.c.organization_id == organization_id))

    def get_many(self, organization_id: UUID, role_ids: Iterable[UUID]) -> builtins.list[Role]:
        """The roles of the organization among ``role_ids``, ordered by creation."""
        ids = set(role_ids)
        if not ids:
            return []
        return self._fetch(
            _ROLE_WITH_PERMISSIONS.where(
                ROLES.c.organization_id == organization_id, ROLES.c.id.in_(ids)
            )
        )

    def update(self, role: Role) -> None:
        """Replace (within its organization); raises NotFound if absent, RoleNameTaken on
        a name conflict."""
        statement = (
            update(ROLES)
            .where(ROLES.c.id == role.id, ROLES.c.organization_id == role.organization_id)
            .values(
                name=role.name,
                description=role.description,
                is_system=role.is_system,
                created_at=role.created_at,
                updated_at=role.updated_at,
            )
        )
        if self._tx.execute_guarded(statement) == 0:
            raise NotFound("role")
        self._set_permissions(role.id, role.permissions, replace=True)

    def delete(self, organization_id: UUID, role_id: UUID) -> None:
        """Delete the role if it belongs to the organization; otherwise do nothing."""
        self._tx.execute(
            delete(ROLES).where(ROLES.c.id == role_id, ROLES.c.organization_id == organization_id),
            write=True,
        )

    def is_assigned(self, role_id: UUID) -> bool:
        """True if a membership or an unaccepted, unrevoked invitation holds the role
        (expired invitations count: they can still be listed and revoked)."""
        held = exists().where(MEMBERSHIP_ROLES.c.role_id == role_id)
        invited = (
            exists()
            .select_from(INVITATION_ROLES.join(INVITATIONS))
            .where(
                INVITATION_ROLES.c.role_id == role_id,
                INVITATIONS.c.accepted_at.is_(None),
                INVITATIONS.c.revoked_at.is_(None),
            )
        )
        return bool(self._tx.execute(select(or_(held, invited))).scalar_one())


class SqlMembershipRepository(SqlRepository):
    """:class:`~usermgmt.ports.MembershipRepository` in SQL."""

    __slots__ = ()

    def _fetch(self, statement: Select[Any]) -> list[Membership]:
        rows = self._tx.execute(statement.order_by(MEMBERSHIPS.c.id))
        return [_membership(row, ids) for row, ids in group_by_id(rows, "role_id")]

    def _add_roles(self, membership_id: UUID, role_ids: Iterable[UUID]) -> None:
        links = [{"membership_id": membership_id, "role_id": r} for r in sorted(set(role_ids))]
        if links:
            self._tx.execute(insert(MEMBERSHIP_ROLES).values(links), write=True)

    def add(self, membership: Membership) -> None:
        """Insert; raises AlreadyMember, or Conflict for a duplicate id."""
        values = {c.name: getattr(membership, c.name) for c in MEMBERSHIPS.columns}
        self._tx.execute_guarded(insert(MEMBERSHIPS).values(values))
        self._add_roles(membership.id, membership.role_ids)

    def get(self, organization_id: UUID, user_id: UUID) -> Membership | None:
        found = self._fetch(
            _MEMBERSHIP_WITH_ROLES.where(
                MEMBERSHIPS.c.organization_id == organization_id,
                MEMBERSHIPS.c.user_id == user_id,
            )
        )
        return found[0] if found else None

    def update(self, membership: Membership) -> None:
        """Replace roles, version and times (matched by id); raises NotFound if absent and
        ValueError if it would move to another organization or user."""
        statement = (
            update(MEMBERSHIPS)
            .where(
                MEMBERSHIPS.c.id == membership.id,
                MEMBERSHIPS.c.organization_id == membership.organization_id,
                MEMBERSHIPS.c.user_id == membership.user_id,
            )
            .values(
                version=membership.version,
                joined_at=membership.joined_at,
                updated_at=membership.updated_at,
            )
        )
        if self._tx.execute(statement, write=True).rowcount == 0:
            moved = select(MEMBERSHIPS.c.id).where(MEMBERSHIPS.c.id == membership.id)
            if self._tx.execute(moved).first() is not None:
                raise ValueError("a membership cannot move to another organization or user")
            raise NotFound("membership")
        self._tx.execute(
            delete(MEMBERSHIP_ROLES).where(MEMBERSHIP_ROLES.c.membership_id == membership.id),
            write=True,
        )
        self._add_roles(membership.id, membership.role_ids)

    def delete(self, organization_id: UUID, user_id: UUID) -> None:
        self._tx.execute(
            delete(MEMBERSHIPS).where(
                MEMBERSHIPS.c.organization_id == organization_id,
                MEMBERSHIPS.c.user_id == user_id,
            ),
            write=True,
        )

    def list_for_organization(
        self, organization_id: UUID, *, limit: int, after: UUID | None
    ) -> list[Membership]:
        """Memberships by id after the cursor (the page is cut before joining the roles)."""
        if limit <= 0:
            return []
        page = (
            select(MEMBERSHIPS.c.id)
            .where(MEMBERSHIPS.c.organization_id == organization_id)
            .order_by(MEMBERSHIPS.c.id)
            .limit(limit)
        )
        if after is not None:
            page = page.where(MEMBERSHIPS.c.id > after)
        return self._fetch(_MEMBERSHIP_WITH_ROLES.where(MEMBERSHIPS.c.id.in_(page)))

    def list_for_user(self, user_id: UUID) -> list[Membership]:
        return self._fetch(_MEMBERSHIP_WITH_ROLES.where(MEMBERSHIPS.c.user_id == user_id))

    def count_with_role(self, organization_id: UUID, role_id: UUID) -> int:
        statement = (
            select(func.count())
            .select_from(MEMBERSHIP_ROLES.join(MEMBERSHIPS))
            .where(
                MEMBERSHIPS.c.organization_id == organization_id,
                MEMBERSHIP_ROLES.c.role_id == role_id,
            )
        )
        return int(self._tx.execute(statement).scalar_one())
