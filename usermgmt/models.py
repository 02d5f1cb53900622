"""Domain entities: plain frozen dataclasses, no persistence or HTTP in them.

Services change state by building a new instance with :func:`dataclasses.replace`
and handing it to a repository. IDs are UUIDs (version 7, time-ordered), times are
timezone-aware UTC datetimes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Generic, TypeVar
from uuid import UUID

JSONObject = dict[str, Any]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Where a call comes from; recorded in audit events. Every field is optional."""

    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None


EMPTY_CONTEXT = RequestContext()


@dataclass(frozen=True, slots=True)
class User:
    id: UUID
    email: str
    created_at: datetime
    updated_at: datetime
    name: str | None = None
    password_hash: str | None = None  # None: no usable password (OAuth-only account)
    is_active: bool = True
    is_verified: bool = False
    is_superuser: bool = False
    must_reset_password: bool = False  # set by an admin on evidence of compromise
    metadata: JSONObject = field(default_factory=dict)
    email_verified_at: datetime | None = None
    last_login_at: datetime | None = None
    deactivated_at: datetime | None = None

    @property
    def has_usable_password(self) -> bool:
        return self.password_hash is not None


@dataclass(frozen=True, slots=True)
class Organization:
    id: UUID
    name: str
    slug: str
    created_at: datetime
    updated_at: datetime
    metadata: JSONObject = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Permission:
    """A ``resource:action`` permission of the catalogue."""

    name: str
    description: str = ""
    is_system: bool = False


@dataclass(frozen=True, slots=True)
class Role:
    id: UUID
    organization_id: UUID
    name: str
    permissions: frozenset[str]
    created_at: datetime
    updated_at: datetime
    description: str = ""
    is_system: bool = False


@dataclass(frozen=True, slots=True)
class Membership:
    id: UUID
    organization_id: UUID
    user_id: UUID
    role_ids: frozenset[UUID]
    joined_at: datetime
    updated_at: datetime
    version: int = 1


class InvitationStatus(enum.StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    REVOKED = "revoked"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class Invitation:
    id: UUID
    organization_id: UUID
    email: str
    role_ids: frozenset[UUID]
    token_hash: str
    invited_by: UUID | None
    created_at: datetime
    expires_at: datetime
    accepted_at: datetime | None = None
    accepted_by: UUID | None = None
    revoked_at: datetime | None = None

    def status(self, now: datetime) -> InvitationStatus:
        if self.accepted_at is not None:
            return InvitationStatus.ACCEPTED
        if self.revoked_at is not None:
            return InvitationStatus.REVOKED
        if self.expires_at <= now:
            return InvitationStatus.EXPIRED
        return InvitationStatus.PENDING


@dataclass(frozen=True, slots=True)
class Session:
    """A refresh-token family: one login, rotated on every refresh.

    ``generation`` counts rotations (never a timestamp, so two rotations in the
    same second stay ordered) and ``token_hash`` is the SHA-256 of the current
    refresh token.
    """

    id: UUID
    user_id: UUID
    token_hash: str
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime  # absolute lifetime of the family
    generation: int = 1
    revoked_at: datetime | None = None
    revoked_reason: str | None = None
    ip: str | None = None
    user_agent: str | None = None

    def is_active(self, now: datetime) -> bool:
        return self.revoked_at is None and self.expires_at > now


class TokenPurpose(enum.StrEnum):
    EMAIL_VERIFICATION = "email_verification"
    PASSWORD_RESET = "password_reset"
    OAUTH_EXCHANGE = "oauth_exchange"  # the one-time code after an OAuth callback


@dataclass(frozen=True, slots=True)
class OneTimeToken:
    """A single-use email token; only the SHA-256 of the token is stored."""

    id: UUID
    user_id: UUID
    purpose: TokenPurpose
    token_hash: str
    email: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class OAuthAccount:
    id: UUID
    user_id: UUID
    provider: str
    subject: str
    created_at: datetime
    email: str | None = None


@dataclass(frozen=True, slots=True)
class AuditEvent:
    id: UUID
    occurred_at: datetime
    action: str
    actor_user_id: UUID | None = None
    organization_id: UUID | None = None
    outcome: str = "success"  # "success", "failure" or "denied"
    target_type: str | None = None
    target_id: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None
    metadata: JSONObject = field(default_factory=dict)
    #: Hash chain (see :mod:`usermgmt.audit_chain`): set by the repository on append.
    chain_seq: int | None = None
    prev_hash: str | None = None
    hash: str | None = None


@dataclass(frozen=True, slots=True)
class TokenPair:
    """What login, refresh and the OAuth exchange return."""

    access_token: str
    refresh_token: str
    expires_in: int
    session_id: UUID
    token_type: str = "bearer"


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """The verified claims of an access token."""

    user_id: UUID
    session_id: UUID
    issued_at: int
    expires_at: int
    token_id: str


@dataclass(frozen=True, slots=True)
class EffectivePermissions:
    """A user's union of permissions and role names in one organization."""

    organization_id: UUID
    user_id: UUID
    permissions: frozenset[str]
    roles: frozenset[str]


@dataclass(frozen=True, slots=True)
class Access(EffectivePermissions):
    """What passing a permission check gives a route: the caller (:attr:`user`) with
    their effective permissions and role names in the organization.

    The FastAPI dependency ``require_permission(...)`` returns one, so a route needs
    a single dependency for both the check and the caller; Flask's
    ``current_permissions()`` returns one too.
    """

    user: User

    @classmethod
    def of(cls, effective: EffectivePermissions, user: User) -> Access:
        """``effective`` (the permissions of ``user``) together with ``user``."""
        # (usually the very UUID object the check was asked about: no comparison needed)
        if effective.user_id is not user.id and effective.user_id != user.id:
            raise ValueError("the effective permissions are not this user's")
        # What the frozen dataclass's __init__ does, minus one object.__setattr__ per
        # field: this runs for every request a permission check lets through. The fields
        # are set on an instance of a twin class (the same slots, the default
        # __setattr__: each a plain attribute store), which then becomes an Access.
        if cls is not Access:  # a subclass may have fields of its own
            return cls(
                organization_id=effective.organization_id,
                user_id=effective.user_id,
                permissions=effective.permissions,
                roles=effective.roles,
                user=user,
            )
        access: Any = object.__new__(_AccessFields)
        access.organization_id = effective.organization_id
        access.user_id = effective.user_id
        access.permissions = effective.permissions
        access.roles = effective.roles
        access.user = user
        access.__class__ = cls
        result: Access = access
        return result


class _AccessFields(EffectivePermissions):
    """Access's twin for :meth:`Access.of`: the same slots, not frozen."""

    __slots__ = ("user",)
    # both: they share one type slot, which is then CPython's plain attribute store
    __setattr__ = object.__setattr__
    __delattr__ = object.__delattr__


#: Access's fields in order (tests/unit checks it against dataclasses.fields).
_ACCESS_FIELDS: Final = ("organization_id", "user_id", "permissions", "roles", "user")


@dataclass(frozen=True, slots=True)
class MemberView:
    """A membership with its user and role names, as member listings show it."""

    membership: Membership
    user: User
    roles: tuple[Role, ...]


@dataclass(frozen=True, slots=True)
class UserOrganization:
    """An organization the user belongs to, with the user's roles there."""

    organization: Organization
    membership: Membership
    roles: tuple[Role, ...]


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a cursor-paginated list."""

    items: list[T]
    next_cursor: str | None
