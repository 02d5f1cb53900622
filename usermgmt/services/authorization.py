"""Authorization: a user's effective permissions in an organization, cached and versioned.

The cache is never the source of truth. Each organization has a version key;
every role or membership change deletes it *after* its commit, so the next read
picks a fresh version and older entries become unreachable. Entries carry the
version they were computed under, so one ``get_many`` answers a check. When the
cache fails, checks read the database (slower, never wrong).

A database in this process (the memory backend, :class:`ProcessLocalReads`) with no
cache or an in-process one is read directly instead of the cache (a shared cache, Redis,
is used as with any database), and each answer is remembered with the store's data
version: it is served again only while nothing at all was committed or rolled back
since, so a role or membership change is seen by the very next check.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable
from uuid import UUID

from usermgmt.errors import BackendUnavailable, NotFound, PermissionDenied
from usermgmt.models import EffectivePermissions, RequestContext, Role, User
from usermgmt.permissions import SYSTEM_ROLES
from usermgmt.ports import OneStatementReads, UnitOfWork
from usermgmt.services.base import Kernel

logger = logging.getLogger("usermgmt.authz")

ENTRY_TTL_SECONDS = 300.0
VERSION_TTL_SECONDS = 86400.0
_NOT_MEMBER = "-"
_MEMO_LIMIT = 4096


@runtime_checkable
class ProcessLocalReads(OneStatementReads, Protocol):
    """A database in this process (the memory backend's unit-of-work factory): reads
    cost no round trip, and a version number tells whether anything changed."""

    @property
    def data_version(self) -> int | None:
        """Changes with every commit or rollback that changed the data; None when the
        calling thread has a transaction open (remembered answers do not hold there)."""

    def member_roles_at(
        self, organization_id: UUID, user_id: UUID
    ) -> tuple[int | None, tuple[bool, list[Role]] | None]:
        """``member_roles`` and the :attr:`data_version` the answer holds for (None:
        it may include writes of this thread not committed yet; do not remember it)."""

    def live_session_user_at(
        self, session_id: UUID, user_id: UUID
    ) -> tuple[int | None, bool, User | None]:
        """``live_session_user`` with the :attr:`data_version` the answer holds for
        (None as for :meth:`member_roles_at`)."""

    def copy_of(self, user: User) -> User:
        """A copy of a user this database returned that shares no mutable state with
        it: a remembered answer is handed out as a fresh copy each time."""


def _version_key(org_id: UUID) -> str:
    return f"um:{{o:{org_id.hex}}}:v"


def _entry_key(org_id: UUID, user_id: UUID) -> str:
    return f"um:{{o:{org_id.hex}}}:u:{user_id.hex}"


class AuthorizationService:
    """Answers "may this user do that in this organization?"."""

    def __init__(self, kernel: Kernel) -> None:
        self._k = kernel
        # decoded cache values: the same string always decodes to the same answer
        self._memo: dict[str, tuple[frozenset[str], frozenset[str]] | None] = {}
        # organizations whose invalidation could not reach the cache: their entries
        # are not trusted (this process reads the database) until a retry succeeds
        self._unflushed: set[UUID] = set()
        self._unflushed_lock = threading.Lock()
        # one SELECT per answer instead of a transaction, when the database offers it
        self._one = kernel.uow if isinstance(kernel.uow, OneStatementReads) else None
        # a database in this process: read it (no cache), answers remembered per version
        self._local = self._local_database()
        self._answers: dict[tuple[int, int], tuple[int, str, EffectivePermissions | None]] = {}

    @property
    def reads_locally(self) -> bool:
        """Whether checks read the database in this process directly (the memory
        backend) instead of the cache. Setting it False makes them go through the cache
        as with a shared database (what the cache's own tests do)."""
        return self._local is not None

    @reads_locally.setter
    def reads_locally(self, enabled: bool) -> None:
        self._local = self._local_database() if enabled else None
        self._answers.clear()

    def _local_database(self) -> ProcessLocalReads | None:
        """The database if it is in this process and the cache (if any) too: a shared
        cache (Redis) is still used, as with any database."""
        uow, cache = self._k.uow, self._k.cache
        if not isinstance(uow, ProcessLocalReads):
            return None
        if cache is not None and getattr(cache, "process_local", False) is not True:
            return None
        return uow

    # --- public API --------------------------------------------------------------------

    def effective(self, user_id: UUID, organization_id: UUID) -> EffectivePermissions | None:
        """The user's permissions and role names there, or None if not a member."""
        if self._local is not None:
            return self._local_effective(self._local, user_id, organization_id)
        decoded = self._lookup(user_id, organization_id)
        if decoded is None:
            return None
        permissions, roles = decoded
        return EffectivePermissions(organization_id, user_id, permissions, roles)

    def has_permission(self, user_id: UUID, organization_id: UUID, permission: str) -> bool:
        """True if the user is a member holding ``permission`` (through any of their roles)."""
        if self._local is not None:
            eff = self._local_effective(self._local, user_id, organization_id)
            return eff is not None and permission in eff.permissions
        decoded = self._lookup(user_id, organization_id)
        return decoded is not None and permission in decoded[0]

    def require(
        self,
        user_id: UUID,
        organization_id: UUID,
        permission: str,
        ctx: RequestContext | Callable[[], RequestContext] | None = None,
    ) -> EffectivePermissions:
        """The user's permissions if they include ``permission``.

        Raises NotFound("organization") for outsiders (no existence leak) and
        PermissionDenied for members without the permission (audited). ``ctx`` may be a
        function building the request context: only a refusal, which is audited, calls
        it (adapters pass one, so the usual answer builds no context).
        """
        local = self._local
        if local is not None:
            eff = self._local_effective(local, user_id, organization_id)
        else:
            eff = self.effective(user_id, organization_id)
        if eff is None:
            raise NotFound("organization")
        if permission not in eff.permissions:
            if callable(ctx):
                ctx = ctx()
            self._k.write(
                lambda uow: self._k.audit(
                    uow,
                    "authorization.denied",
                    ctx,
                    actor=user_id,
                    org=organization_id,
                    outcome="denied",
                    target_type="permission",
                    target_id=permission,
                    permission=permission,
                )
            )
            raise PermissionDenied(f"Missing permission {permission!r}.", permission=permission)
        return eff

    def require_member(self, user_id: UUID, organization_id: UUID) -> EffectivePermissions:
        """The user's permissions if they are a member; NotFound("organization") otherwise."""
        eff = self.effective(user_id, organization_id)
        if eff is None:
            raise NotFound("organization")
        return eff

    def invalidate(self, organization_id: UUID) -> None:
        """Forget every cached answer for the organization (call after commit).

        If the cache cannot be reached, the invalidation is remembered and retried
        before every later lookup; until it succeeds this process ignores the
        organization's cached entries, so a lost invalidation never serves stale rights.
        """
        if self._k.cache is None:
            return
        with self._unflushed_lock:
            self._unflushed.add(organization_id)
        self._flush()

    def invalidate_user(self, user_id: UUID) -> None:
        """Forget cached answers of every organization the user belongs to."""
        for membership in self._k.read(lambda uow: uow.memberships.list_for_user(user_id)):
            self.invalidate(membership.organization_id)

    def _flush(self) -> None:
        cache = self._k.cache
        if cache is None:
            return
        with self._unflushed_lock:
            pending = list(self._unflushed)
        for org_id in pending:
            try:
                cache.delete(_version_key(org_id))
            except BackendUnavailable:
                logger.error(
                    "permission cache unavailable: invalidation of an organization deferred"
                )
                return
            with self._unflushed_lock:
                self._unflushed.discard(org_id)

    def compute(
        self, uow: UnitOfWork, user_id: UUID, organization_id: UUID
    ) -> tuple[frozenset[str], frozenset[str]] | None:
        """Read the answer from the database inside ``uow`` (no cache)."""
        membership = uow.memberships.get(organization_id, user_id)
        if membership is None:
            return None
        user = uow.users.get(user_id)
        if user is None or not user.is_active:
            return None  # a deactivated account holds nothing anywhere
        roles = uow.roles.get_many(organization_id, membership.role_ids)
        return self.permissions_of(roles), frozenset(role.name for role in roles)

    def permissions_of(self, roles: list[Role]) -> frozenset[str]:
        """The union of the roles' permissions (system roles follow the live catalogue)."""
        granted: set[str] = set()
        for role in roles:
            if role.is_system and role.name in SYSTEM_ROLES:
                granted |= self._k.registry.system_role_permissions(role.name)
            else:
                granted |= role.permissions
        return frozenset(granted)

    # --- a database in this process --------------------------------------------------------

    def _local_effective(
        self, local: ProcessLocalReads, user_id: UUID, organization_id: UUID
    ) -> EffectivePermissions | None:
        """The answer from the database in this process, remembered while its data
        version (and the permission catalogue) stays the same."""
        fingerprint = self._k.registry.fingerprint
        # the ids' numbers: hashing a UUID is a Python call, an int's is not (another
        # kind of id is not remembered: it names nobody in the store anyway)
        key: tuple[int, int] | None = None
        if type(organization_id) is UUID and type(user_id) is UUID:
            key = (organization_id.int, user_id.int)
            known = self._answers.get(key)
            if known is not None and known[0] == local.data_version and known[1] == fingerprint:
                return known[2]
        version, found = local.member_roles_at(organization_id, user_id)
        if found is None or not found[0]:
            eff = None  # not a member, or a deactivated account (as in compute)
        else:
            roles = found[1]
            eff = EffectivePermissions(
                organization_id,
                user_id,
                self.permissions_of(roles),
                frozenset(role.name for role in roles),
            )
        if version is not None and key is not None:
            if len(self._answers) >= _MEMO_LIMIT:
                self._answers.clear()
            self._answers[key] = (version, fingerprint, eff)
        return eff

    # --- cache ---------------------------------------------------------------------------

    def _lookup(
        self, user_id: UUID, organization_id: UUID
    ) -> tuple[frozenset[str], frozenset[str]] | None:
        cache = self._k.cache
        if cache is None:
            return self._from_db(user_id, organization_id)
        if self._unflushed:
            self._flush()
            if organization_id in self._unflushed:
                return self._from_db(user_id, organization_id)
        try:
            org_hex, user_hex = organization_id.hex, user_id.hex
        except AttributeError:  # an id that is not a UUID names nobody: no membership
            return self._from_db(user_id, organization_id)
        vkey, ekey = f"um:{{o:{org_hex}}}:v", f"um:{{o:{org_hex}}}:u:{user_hex}"
        try:
            version, entry = cache.get_many((vkey, ekey))
        except BackendUnavailable:
            return self._from_db(user_id, organization_id)
        fingerprint = self._k.registry.fingerprint
        if version is not None and entry is not None:
            head, _, body = entry.partition("|")
            if head == f"{version}/{fingerprint}":
                memo = self._memo
                if body in memo:
                    return memo[body]
                return self._remember(body)
        if version is None:
            version = f"{time.time_ns():x}{secrets.token_hex(4)}"
            try:
                cache.set(vkey, version, VERSION_TTL_SECONDS)
            except BackendUnavailable:
                return self._from_db(user_id, organization_id)
        answer = self._from_db(user_id, organization_id)
        body = _encode(answer)
        try:
            cache.set(ekey, f"{version}/{fingerprint}|{body}", ENTRY_TTL_SECONDS)
        except BackendUnavailable:
            logger.warning("permission cache unavailable: serving from the database")
        return answer

    def _from_db(
        self, user_id: UUID, organization_id: UUID
    ) -> tuple[frozenset[str], frozenset[str]] | None:
        if self._one is not None:
            found = self._one.member_roles(organization_id, user_id)
            if found is None or not found[0]:
                return None  # not a member, or a deactivated account (as in compute)
            roles = found[1]
            return self.permissions_of(roles), frozenset(role.name for role in roles)
        return self._k.read(lambda uow: self.compute(uow, user_id, organization_id), replica=False)

    def _remember(self, body: str) -> tuple[frozenset[str], frozenset[str]] | None:
        decoded = _decode(body)
        if len(self._memo) >= _MEMO_LIMIT:
            self._memo.clear()
        self._memo[body] = decoded
        return decoded


def _encode(answer: tuple[frozenset[str], frozenset[str]] | None) -> str:
    if answer is None:
        return _NOT_MEMBER
    permissions, roles = answer
    return " ".join(sorted(permissions)) + "|" + "\x1f".join(sorted(roles))


def _decode(body: str) -> tuple[frozenset[str], frozenset[str]] | None:
    if body == _NOT_MEMBER:
        return None
    permissions, _, roles = body.partition("|")
    return frozenset(permissions.split()), frozenset(r for r in roles.split("\x1f") if r)
