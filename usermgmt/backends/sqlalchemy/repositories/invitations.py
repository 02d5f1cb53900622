"""SQL repository for invitations (with their roles in ``invitation_roles``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import RowMapping, Select, insert, select, update

from usermgmt.backends.sqlalchemy.models import InvitationRoleRow, InvitationRow, table_of
from usermgmt.backends.sqlalchemy.repositories._base import SqlRepository, group_by_id
from usermgmt.models import Invitation

__all__ = ["SqlInvitationRepository"]

INVITATIONS = table_of(InvitationRow)
INVITATION_ROLES = table_of(InvitationRoleRow)

_WITH_ROLES = select(INVITATIONS, INVITATION_ROLES.c.role_id).select_from(
    INVITATIONS.outerjoin(INVITATION_ROLES, INVITATION_ROLES.c.invitation_id == INVITATIONS.c.id)
)
_SETTLEABLE = (INVITATIONS.c.accepted_at.is_(None), INVITATIONS.c.revoked_at.is_(None))


def _invitation(row: RowMapping, role_ids: frozenset[UUID]) -> Invitation:
    values = {c.name: row[c.name] for c in INVITATIONS.columns}
    return Invitation(role_ids=role_ids, **values)


class SqlInvitationRepository(SqlRepository):
    """:class:`~usermgmt.ports.InvitationRepository` in SQL; accepting and revoking are
    single ``UPDATE ... WHERE <still pending> RETURNING`` statements."""

    __slots__ = ()

    def _fetch(self, statement: Select[Any]) -> list[Invitation]:
        rows = self._tx.execute(statement.order_by(INVITATIONS.c.id))
        return [_invitation(row, ids) for row, ids in group_by_id(rows, "role_id")]

    def _first(self, statement: Select[Any]) -> Invitation | None:
        found = self._fetch(statement)
        return found[0] if found else None

    def add(self, invitation: Invitation) -> None:
        """Insert; raises Conflict for a duplicate id or token hash."""
        values = {c.name: getattr(invitation, c.name) for c in INVITATIONS.columns}
        self._tx.execute_guarded(insert(INVITATIONS).values(values))
        links = [
            {"invitation_id": invitation.id, "role_id": role_id}
            for role_id in sorted(invitation.role_ids)
        ]
        if links:
            self._tx.execute(insert(INVITATION_ROLES).values(links), write=True)

    def get(self, organization_id: UUID, invitation_id: UUID) -> Invitation | None:
        return self._first(
            _WITH_ROLES.where(
                INVITATIONS.c.id == invitation_id,
                INVITATIONS.c.organization_id == organization_id,
            )
        )

    def get_by_token_hash(self, token_hash: str) -> Invitation | None:
        return self._first(_WITH_ROLES.where(INVITATIONS.c.token_hash == token_hash))

    def list_for_organization(
        self, organization_id: UUID, *, limit: int, after: UUID | None
    ) -> list[Invitation]:
        """Invitations by id after the cursor (the page is cut before joining the roles)."""
        if limit <= 0:
            return []
        page = (
            select(INVITATIONS.c.id)
            .where(INVITATIONS.c.organization_id == organization_id)
            .order_by(INVITATIONS.c.id)
            .limit(limit)
        )
        if after is not None:
            page = page.where(INVITATIONS.c.id > after)
        return self._fetch(_WITH_ROLES.where(INVITATIONS.c.id.in_(page)))

    def _settle(self, invitation_id: UUID, *conditions: Any, **values: Any) -> Invitation | None:
        statement = (
            update(INVITATIONS)
            .where(INVITATIONS.c.id == invitation_id, *_SETTLEABLE, *conditions)
            .values(**values)
            .returning(*INVITATIONS.columns)
        )
        row = self._tx.execute(statement, write=True).mappings().first()
        if row is None:
            return None
        roles = select(INVITATION_ROLES.c.role_id).where(
            INVITATION_ROLES.c.invitation_id == invitation_id
        )
        return _invitation(row, frozenset(self._tx.execute(roles).scalars()))

    def accept(self, invitation_id: UUID, user_id: UUID, now: datetime) -> Invitation | None:
        """Atomic: mark accepted if pending and unexpired at ``now``; None otherwise."""
        return self._settle(
            invitation_id, INVITATIONS.c.expires_at > now, accepted_at=now, accepted_by=user_id
        )

    def revoke(self, invitation_id: UUID, now: datetime) -> Invitation | None:
        """Atomic: mark revoked if neither accepted nor revoked; None otherwise."""
        return self._settle(invitation_id, revoked_at=now)
