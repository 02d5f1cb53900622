"""The in-memory store: every table as a dict, one lock, and an undo journal.

A :class:`MemoryStore` is the "database" of the in-memory backend. Units of work
(:mod:`usermgmt.backends.memory.uow`) hold :attr:`MemoryStore.lock` for their
whole lifetime, which makes every transaction serialisable. Writes go straight
into the tables and are recorded in the unit of work's :class:`Journal`, so a
rollback replays the journal backwards and nothing uncommitted can be seen by
another thread (it would have to take the lock first).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import operator
import threading
import types
from collections.abc import Callable, Hashable
from typing import Any, Final, TypeVar
from uuid import UUID

from usermgmt.models import (
    AuditEvent,
    Invitation,
    Membership,
    OAuthAccount,
    OneTimeToken,
    Organization,
    Permission,
    Role,
    Session,
    TokenPurpose,
    User,
)
from usermgmt.ports import AuditArchiveBatch, AuditChainHead

__all__ = ["Journal", "MemoryStore", "detach", "normalize_email"]

E = TypeVar("E")


class _Missing:
    """Marks "the key was absent" in the undo journal."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"


MISSING: Final = _Missing()


def normalize_email(email: str) -> str:
    """The form used for case-insensitive email uniqueness and lookups."""
    return email.strip().lower()


def detach(entity: E) -> E:
    """A copy of ``entity`` that shares no mutable state with it.

    Entities are frozen dataclasses; only their ``metadata`` dict is mutable, so
    that is the only field deep-copied. Entities without one are returned as is.
    """
    metadata = getattr(entity, "metadata", None)
    if metadata is None:
        return entity
    fresh = copy.deepcopy(metadata) if metadata else {}
    kind: type = type(entity)
    copier = _copier(kind)
    if copier is None:
        changes: dict[str, Any] = {"metadata": fresh}
        return dataclasses.replace(entity, **changes)  # type: ignore[type-var]
    # What replace() does, minus its generic machinery (and the frozen __setattr__ per
    # field): this runs for every entity read, i.e. every authenticated request of the
    # in-process backends.
    get_fields, setters, position = copier
    values = list(get_fields(entity))
    values[position] = fresh
    clone: E = object.__new__(kind)
    for set_slot, value in zip(setters, values, strict=True):
        set_slot(clone, value)
    return clone


_Copier = tuple[Callable[[Any], tuple[Any, ...]], tuple[Callable[[Any, Any], None], ...], int]


@functools.cache
def _copier(cls: type) -> _Copier | None:
    """For a slotted dataclass without ``__post_init__`` whose fields all have a slot
    (the entities): a getter of every field, the slots' setters, and the position of
    ``metadata``. None for anything else (copied with ``dataclasses.replace``)."""
    if not dataclasses.is_dataclass(cls) or hasattr(cls, "__post_init__"):
        return None
    names = [f.name for f in dataclasses.fields(cls)]
    slots = [cls.__dict__.get(name) for name in names]
    if len(names) < 2 or "metadata" not in names:
        return None
    if not all(type(slot) is types.MemberDescriptorType for slot in slots):
        return None
    setters = tuple(slot.__set__ for slot in slots)  # type: ignore[union-attr]
    return operator.attrgetter(*names), setters, names.index("metadata")


class Journal:
    """The undo log of one unit of work: how to put back every dict it changed."""

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: list[tuple[dict[Any, Any], Hashable, object]] = []

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, table: dict[Any, Any], key: Hashable, value: object) -> None:
        """``table[key] = value``, remembering the previous state."""
        self._entries.append((table, key, table.get(key, MISSING)))
        table[key] = value

    def delete(self, table: dict[Any, Any], key: Hashable) -> None:
        """``del table[key]`` if present, remembering the previous state."""
        if key in table:
            self._entries.append((table, key, table[key]))
            del table[key]

    def forget(self) -> None:
        """Commit: the changes stay, the undo information goes."""
        self._entries.clear()

    def undo(self) -> None:
        """Rollback: restore every changed key, newest change first."""
        while self._entries:
            table, key, old = self._entries.pop()
            if old is MISSING:
                table.pop(key, None)
            else:
                table[key] = old


class MemoryStore:
    """All tables of the in-memory backend.

    Primary tables map ids to frozen entities; the ``*_index`` dicts are unique
    indexes mapping a natural key to an id. Touch them only through a unit of
    work from :class:`~usermgmt.backends.memory.MemoryUnitOfWorkFactory`.

    ``lock`` is re-entrant so that a job run synchronously inside an open unit
    of work (an :class:`~usermgmt.backends.memory.InlineQueue` in ``sync`` mode)
    can open its own unit of work in the same thread instead of deadlocking.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.users: dict[UUID, User] = {}
        self.user_email_index: dict[str, UUID] = {}
        self.organizations: dict[UUID, Organization] = {}
        self.organization_slug_index: dict[str, UUID] = {}
        self.permissions: dict[str, Permission] = {}
        self.roles: dict[UUID, Role] = {}
        self.role_name_index: dict[tuple[UUID, str], UUID] = {}
        self.memberships: dict[UUID, Membership] = {}
        self.membership_index: dict[tuple[UUID, UUID], UUID] = {}
        self.invitations: dict[UUID, Invitation] = {}
        self.invitation_token_index: dict[str, UUID] = {}
        self.sessions: dict[UUID, Session] = {}
        self.tokens: dict[UUID, OneTimeToken] = {}
        self.token_index: dict[tuple[TokenPurpose, str], UUID] = {}
        self.oauth_accounts: dict[UUID, OAuthAccount] = {}
        self.oauth_index: dict[tuple[str, str], UUID] = {}
        self.audit: dict[UUID, AuditEvent] = {}
        self.audit_heads: dict[str, AuditChainHead] = {}
        self.audit_batches: dict[tuple[str, int], AuditArchiveBatch] = {}

    def counts(self) -> dict[str, int]:
        """Row counts per table (for debugging and tests)."""
        with self.lock:
            return {
                "users": len(self.users),
                "organizations": len(self.organizations),
                "permissions": len(self.permissions),
                "roles": len(self.roles),
                "memberships": len(self.memberships),
                "invitations": len(self.invitations),
                "sessions": len(self.sessions),
                "tokens": len(self.tokens),
                "oauth_accounts": len(self.oauth_accounts),
                "audit": len(self.audit),
            }
