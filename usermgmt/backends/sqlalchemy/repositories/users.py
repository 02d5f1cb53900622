"""SQL repositories for users, organizations and the permission catalogue.

``get(..., for_update=True)`` takes ``SELECT ... FOR NO KEY UPDATE`` on PostgreSQL: it
serialises the transactions that lock the same row (they all lock before they write)
without blocking the foreign-key checks of inserts that merely reference the row (a
login's new session, a new membership), which plain ``FOR UPDATE`` would also block.
SQLite needs no row lock: its write transactions (``BEGIN IMMEDIATE``) are serial.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from uuid import UUID

from sqlalchemy import RowMapping, Select, delete, func, insert, select, update

from usermgmt.backends.sqlalchemy.models import (
    OrganizationRow,
    PermissionRow,
    UserRow,
    table_of,
)
from usermgmt.backends.sqlalchemy.repositories._base import (
    SqlRepository,
    entity_values,
    insert_ignore,
)
from usermgmt.errors import NotFound
from usermgmt.ids import new_id
from usermgmt.models import Organization, Permission, User

__all__ = ["SqlOrganizationRepository", "SqlPermissionRepository", "SqlUserRepository"]

USERS = table_of(UserRow)
ORGANIZATIONS = table_of(OrganizationRow)
PERMISSIONS = table_of(PermissionRow)

#: Ids per ``IN (...)`` list: well below SQLite's limit of bound parameters.
_IN_BATCH = 500


def _email_key(email: str) -> str:
    return email.strip()


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _user(row: RowMapping) -> User:
    return User(**row)


def _organization(row: RowMapping) -> Organization:
    return Organization(**row)


class SqlUserRepository(SqlRepository):
    """:class:`~usermgmt.ports.UserRepository` in SQL; the email is unique by ``lower(email)``."""

    __slots__ = ()

    def _one(self, statement: Select[Any]) -> User | None:
        row = self._tx.execute(statement).mappings().first()
        return None if row is None else _user(row)

    def add(self, user: User) -> None:
        """Insert; raises EmailTaken (case-insensitive) or Conflict for a duplicate id."""
        self._tx.execute_guarded(insert(USERS).values(entity_values(user, USERS)))

    def get(self, user_id: UUID, *, for_update: bool = False) -> User | None:
        """The user or None; ``for_update`` locks the row (PostgreSQL) until the end."""
        statement = select(USERS).where(USERS.c.id == user_id)
        if for_update and self._tx.dialect_name == "postgresql":
            statement = statement.with_for_update(key_share=True)
        return self._one(statement)

    def get_by_email(self, email: str) -> User | None:
        """Case-insensitive lookup served by the ``lower(email)`` unique index."""
        key = func.lower(_email_key(email))
        return self._one(select(USERS).where(func.lower(USERS.c.email) == key))

    def get_many(self, user_ids: Iterable[UUID]) -> list[User]:
        """The users among ``user_ids`` (each once, ordered by id; unknown ids skipped) in
        one ``IN`` query (one per 500 ids, far above a page of members)."""
        ids = sorted(set(user_ids))
        found: list[User] = []
        for start in range(0, len(ids), _IN_BATCH):
            batch = ids[start : start + _IN_BATCH]
            statement = select(USERS).where(USERS.c.id.in_(batch)).order_by(USERS.c.id)
            found += [_user(row) for row in self._tx.execute(statement).mappings()]
        return found

    def update(self, user: User) -> None:
        """Replace; raises NotFound if absent, EmailTaken if the email is another user's."""
        values = entity_values(user, USERS)
        del values["id"]
        statement = update(USERS).where(USERS.c.id == user.id).values(values)
        if self._tx.execute_guarded(statement) == 0:
            raise NotFound("user")

    def list(self, *, email_prefix: str | None, limit: int, after: UUID | None) -> list[User]:
        """Users by id after the cursor, optionally by case-insensitive email prefix."""
        statement = select(USERS).order_by(USERS.c.id).limit(max(limit, 0))
        if after is not None:
            statement = statement.where(USERS.c.id > after)
        if email_prefix is not None:
            pattern = _escape_like(email_prefix.strip().lower()) + "%"
            statement = statement.where(func.lower(USERS.c.email).like(pattern, escape="\\"))
        return [_user(row) for row in self._tx.execute(statement).mappings()]

    def count(self) -> int:
        return int(self._tx.execute(select(func.count()).select_from(USERS)).scalar_one())


class SqlOrganizationRepository(SqlRepository):
    """:class:`~usermgmt.ports.OrganizationRepository` in SQL; deleting an organization
    cascades (foreign keys) to its roles, memberships and invitations."""

    __slots__ = ()

    def _one(self, statement: Select[Any]) -> Organization | None:
        row = self._tx.execute(statement).mappings().first()
        return None if row is None else _organization(row)

    def add(self, organization: Organization) -> None:
        """Insert; raises SlugTaken, or Conflict for a duplicate id."""
        self._tx.execute_guarded(
            insert(ORGANIZATIONS).values(entity_values(organization, ORGANIZATIONS))
        )

    def get(self, organization_id: UUID, *, for_update: bool = False) -> Organization | None:
        """The organization or None; ``for_update`` locks its row (PostgreSQL) until the end,
        which serialises membership changes (SQLite serialises every writer anyway)."""
        statement = select(ORGANIZATIONS).where(ORGANIZATIONS.c.id == organization_id)
        if for_update and self._tx.dialect_name == "postgresql":
            statement = statement.with_for_update(key_share=True)
        return self._one(statement)

    def get_by_slug(self, slug: str) -> Organization | None:
        return self._one(select(ORGANIZATIONS).where(ORGANIZATIONS.c.slug == slug))

    def update(self, organization: Organization) -> None:
        """Replace; raises NotFound if absent, SlugTaken on a slug conflict."""
        values = entity_values(organization, ORGANIZATIONS)
        del values["id"]
        statement = (
            update(ORGANIZATIONS).where(ORGANIZATIONS.c.id == organization.id).values(values)
        )
        if self._tx.execute_guarded(statement) == 0:
            raise NotFound("organization")

    def delete(self, organization_id: UUID) -> None:
        """Delete with its roles, memberships and invitations; absent ids are ignored."""
        self._tx.execute(
            delete(ORGANIZATIONS).where(ORGANIZATIONS.c.id == organization_id), write=True
        )

    def list_ids(self) -> list[UUID]:
        statement = select(ORGANIZATIONS.c.id).order_by(ORGANIZATIONS.c.id)
        return list(self._tx.execute(statement).scalars())


class SqlPermissionRepository(SqlRepository):
    """:class:`~usermgmt.ports.PermissionRepository` in SQL."""

    __slots__ = ()

    def ensure(self, permissions: Iterable[Permission]) -> None:
        """Insert the missing ones in one statement; existing ones keep their description."""
        rows: dict[str, dict[str, Any]] = {}
        for p in permissions:
            rows.setdefault(
                p.name,
                {
                    "id": new_id(),
                    "name": p.name,
                    "description": p.description,
                    "is_system": p.is_system,
                },
            )
        if not rows:
            return
        statement = insert_ignore(self._tx.dialect_name, PERMISSIONS, ["name"])
        self._tx.execute(statement.values(list(rows.values())), write=True)

    def list(self) -> list[Permission]:
        """The catalogue ordered by name (sorted here: database collations differ)."""
        statement = select(PERMISSIONS.c.name, PERMISSIONS.c.description, PERMISSIONS.c.is_system)
        found = [Permission(**row) for row in self._tx.execute(statement).mappings()]
        return sorted(found, key=lambda p: p.name)
