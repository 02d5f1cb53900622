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
import itertools
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
    kind: type = type(entity)
    copier: Any = _copiers.get(kind, MISSING)
    if copier is MISSING:  # not seen yet (functools.cache would cost more per call)
        copier = _copiers[kind] = _copier(kind)
    metadata = getattr(entity, "metadata", None)
    if metadata is None:
        return entity
    fresh = copy.deepcopy(metadata) if metadata else {}
    if copier is None:
        changes: dict[str, Any] = {"metadata": fresh}
        return dataclasses.replace(entity, **changes)  # type: ignore[type-var]
    # What replace() does, minus its generic machinery: this runs for every entity
    # read, i.e. every authenticated request of the in-process backends.
    clone: E = copier(entity, fresh)
    return clone


#: The copier of each class seen (:func:`_copier`), None for a class without one.
_copiers: dict[type, Callable[[Any, Any], Any] | None] = {}


def _copier(cls: type) -> Callable[[Any, Any], Any] | None:
    """For a slotted dataclass without ``__post_init__`` whose fields all have a slot
    (the entities): a function ``(entity, metadata)`` returning a copy of ``entity``
    with that ``metadata`` (one straight-line function per class, as dataclasses
    generates its ``__init__``). None for anything else (copied with
    ``dataclasses.replace``).

    The copy is made as an instance of a twin class with the very same slots and no
    frozen ``__setattr__`` (each field one plain attribute store, which CPython does
    in a few instructions, where a frozen dataclass's ``__init__`` calls
    ``object.__setattr__`` per field), then given the entity's class: the result is
    an ordinary instance of ``cls``, frozen like any other. When the twin cannot be
    made for ``cls`` (a layout ``__class__`` assignment refuses), each slot is set
    through its descriptor instead."""
    if not dataclasses.is_dataclass(cls) or hasattr(cls, "__post_init__"):
        return None
    names = [f.name for f in dataclasses.fields(cls)]
    slots = [cls.__dict__.get(name) for name in names]
    if len(names) < 2 or "metadata" not in names:
        return None
    if not all(type(slot) is types.MemberDescriptorType for slot in slots):
        return None
    if not all(name.isidentifier() for name in names):  # pragma: no cover - dataclass fields
        return None
    twin = _twin(cls)
    namespace: dict[str, Any] = {"new": object.__new__, "cls": cls, "twin": twin}
    if twin is not None:
        lines = ["def copy(entity, metadata):", "    clone = new(twin)"]
        lines += [
            f"    clone.{name} = {'metadata' if name == 'metadata' else 'entity.' + name}"
            for name in names
        ]
        lines.append("    clone.__class__ = cls")
    else:
        # each slot set through its descriptor's __set__, bound once
        lines = ["def copy(entity, metadata):", "    clone = new(cls)"]
        lines += [
            f"    set_{i}(clone, {'metadata' if name == 'metadata' else 'entity.' + name})"
            for i, name in enumerate(names)
        ]
        namespace.update({f"set_{i}": slot.__set__ for i, slot in enumerate(slots)})  # type: ignore[union-attr]
    lines.append("    return clone")
    exec("\n".join(lines), namespace)  # noqa: S102 - field names of a dataclass only
    copier: Callable[[Any, Any], Any] = namespace["copy"]
    return copier


def _twin(cls: type) -> type | None:
    """A class with ``cls``'s slots (all of them its own: ``cls`` derives from object
    alone) and the default ``__setattr__``, whose instances may be turned into
    instances of ``cls`` by ``__class__`` assignment; None when that is refused."""
    if cls.__bases__ != (object,) or "__slots__" not in cls.__dict__:
        return None
    twin = type(f"_{cls.__name__}Copy", (), {"__slots__": cls.__dict__["__slots__"]})
    try:
        probe: Any = object.__new__(twin)
        probe.__class__ = cls
    except TypeError:  # pragma: no cover - a layout CPython does not accept
        return None
    return twin


class Journal:
    """The undo log of one unit of work: how to put back every dict it changed.

    With a ``store``, a commit or a rollback that changed something bumps the store's
    :attr:`MemoryStore.version`."""

    __slots__ = ("_entries", "_store")

    def __init__(self, store: MemoryStore | None = None) -> None:
        self._entries: list[tuple[dict[Any, Any], Hashable, object]] = []
        self._store = store

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
        if self._entries:
            self._entries.clear()
            self._changed()

    def undo(self) -> None:
        """Rollback: restore every changed key, newest change first."""
        if not self._entries:
            return
        while self._entries:
            table, key, old = self._entries.pop()
            if old is MISSING:
                table.pop(key, None)
            else:
                table[key] = old
        self._changed()

    def _changed(self) -> None:
        if self._store is not None:
            self._store.version += 1  # under the store lock, held by every writer


_FIRST_VERSIONS: Final = itertools.count(1)


class MemoryStore:
    """All tables of the in-memory backend.

    Primary tables map ids to frozen entities; the ``*_index`` dicts are unique
    indexes mapping a natural key to an id. Touch them only through a unit of
    work from :class:`~usermgmt.backends.memory.MemoryUnitOfWorkFactory`.

    ``lock`` is re-entrant so that a job run synchronously inside an open unit
    of work (an :class:`~usermgmt.backends.memory.InlineQueue` in ``sync`` mode)
    can open its own unit of work in the same thread instead of deadlocking.

    ``version`` changes with every commit and every rollback that changed a table
    (whatever is read between two changes is the same), and ``open_units`` counts the
    units of work open (so a reader holding ``lock`` knows whether its own thread has
    one open, whose writes may not be committed yet), ``writer`` the thread holding them
    open (None when none is): all are written under ``lock`` and read under it, except
    that ``version`` and ``writer`` may be read without it, to tell whether an answer
    computed from committed data is still current for the calling thread.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        # unique to this store (a remembered answer names the version it holds for; one
        # of another store never matches)
        self.version = next(_FIRST_VERSIONS) << 48
        self.open_units = 0
        self.writer: int | None = None
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
