"""The tables of SPEC §3 as typed SQLAlchemy 2 declarative models.

The models describe the schema (for migrations and for building statements); the
repositories read and write through Core statements on these tables and hand out the
frozen dataclasses of :mod:`usermgmt.models`, never these classes.

Every constraint and index has an explicit, stable name (the naming convention covers
the ones not named by hand): :mod:`~usermgmt.backends.sqlalchemy.errors` maps a
violated constraint to its domain error by that name.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeEngine

__all__ = [
    "NAMING_CONVENTION",
    "AuditArchiveBatchRow",
    "AuditChainHeadRow",
    "AuditLogRow",
    "Base",
    "InvitationRoleRow",
    "InvitationRow",
    "JSONObjectType",
    "LockoutCounterRow",
    "MembershipRoleRow",
    "MembershipRow",
    "OAuthAccountRow",
    "OneTimeTokenRow",
    "OrganizationRow",
    "PermissionRow",
    "RolePermissionRow",
    "RoleRow",
    "SessionRow",
    "UTCDateTime",
    "UserRow",
    "table_of",
]

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

EMAIL_LENGTH = 320
HASH_LENGTH = 128


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every database.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones, so values are stored as
    naive UTC and made aware again when read. Naive datetimes are refused.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: usermgmt stores aware UTC times only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


#: JSON objects: JSONB on PostgreSQL, JSON text elsewhere.
JSONObjectType: TypeEngine[Any] = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def table_of(model: type[Base]) -> Table:
    """The Core table of a model (for Core statements)."""
    table = model.__table__
    if not isinstance(table, Table):  # pragma: no cover - every model maps one table
        raise TypeError(f"{model.__name__} is not mapped to a table")
    return table


def _fk(target: str, *, on_delete: str = "CASCADE") -> ForeignKey:
    return ForeignKey(target, ondelete=on_delete)


class UserRow(Base):
    __tablename__ = "users"

    id: Mapped[UUID] = mapped_column(Uuid, primary_key=True)
    email: Mapped[str] = mapped_column(String(EMAIL_LENGTH))
    name: Mapped[str | None] = mapped_column(Text)
    password_hash: Mapped[str | None] = mapped_column(Text)
    is_active: Mapped[bool] = mapped_column(Boolean)
    is_verified: Mapped[bool] = mapped_column(Boolean)
    is_superuser: Mapped[bool] = mapped_column(Boolean)
    must_reset_password: Mapped[bool] = mapped_column(Boolean)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONObjectType)
    email_verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deactivated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


# Case-insensitive email uniqueness: this index is the source of truth (R1).
Index("uq_users_lower_email", func.lower(UserRow.email), unique=True)


class OrganizationRow(Base):
    __tablename__ = "organizations"
    __table_args__ = (UniqueConstraint("slug", name="uq_organizations_slug"),)

    id: Mapped[UUID] = mapped_column(Uuid, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    slug: Mapped[str] = mapped_column(String(100))
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONObjectType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PermissionRow(Base):
    __tablename__ = "permissions"
    __table_args__ = (UniqueConstraint("name", name="uq_permissions_name"),)

    id: Mapped[UUID] = mapped_column(Uuid, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text)
    is_system: Mapped[bool] = mapped_column(Boolean)


class RoleRow(Base):
    __tablename__ = "roles"
    __table_args__ = (
        UniqueConstraint("organization_id", "name", name="uq_roles_organization_id_name"),
    )

    id: Mapped[UUID] = mapped_column(Uuid, primary_key=True)
    organization_id: Mapped[UUID] = mapped_column(Uuid, _fk("organizations.id"))
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text)
    is_system: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RolePermissionRow(Base):
    __tablename__ = "role_permissions"
    __table_args__ = (
        PrimaryKeyConstraint("role_id", "permission_id", name="pk_role_permissions"),
        Index("ix_role_permissions_permission_id", "permission_id"),
    )

    role_id: Mapped[UUID] = mapped_column(Uuid, _fk("roles.id"))
    permission_id: Mapped[UUID] = mapped_column(Uuid, _fk("permissions.id"))


class MembershipRow(Base):
    __tablename__ = "organization_memberships"
    __table_args__ = (
        UniqueConstraint(
            "organization_id",
            "user_id",
            name="uq_organization_memberships_organization_id_user_id",
        ),
        Index("ix_organization_memberships_user_id", "user_id"),
        Index("ix_organization_memberships_organization_id_id", "organization_id", "id"),
    )

    id: Mapped[UUID] = mapped_column(Uuid, primary_key=True)
    organization_id: Mapped[UUID] = mapped_column(Uuid, _fk("organizations.id"))
    user_id: Mapped[UUID] = mapped_column(Uuid, _fk("users.id"))
    version: Mapped[int] = mapped_column(Integer)
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class MembershipRoleRow(Base):
    __tablename__ = "membership_roles"
    __table_args__ = (
        PrimaryKeyConstraint("membership_id", "role_id", name="pk_membership_roles"),
        Index("ix_membership_roles_role_id", "role_id"),
    )

    membership_id: Mapped[UUID] = mapped_column(Uuid, _fk("organization_memberships.id"))
    role_id: Mapped[UUID] = mapped_column(Uuid, _fk("roles.id"))


class InvitationRow(Base):
    __tablename__ = "invitations"
    __table_args__ = (
        UniqueConstraint("token_hash", name="uq_invitations_token_hash"),
        Index("ix_invitations_organization_id_id", "organization_id", "id"),
    )

    id: Mapped[UUID] = mapped_column(Uuid, primary_key=True)
    organization_id: Mapped[UUID] = mapped_column(Uuid, _fk("organizations.id"))
    email: Mapped[str] = mapped_column(String(EMAIL_LENGTH))
    token_hash: Mapped[str] = mapped_column(String(HASH_LENGTH))
    invited_by: Mapped[UUID | None] = mapped_column(Uuid, _fk("users.id", on_delete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    accepted_by: Mapped[UUID | None] = mapped_column(Uuid, _fk("users.id", on_delete="SET NULL"))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class InvitationRoleRow(Base):
    __tablename__ = "invitation_roles"
    __table_args__ = (
        PrimaryKeyConstraint("invitation_id", "role_id", name="pk_invitation_roles"),
        Index("ix_invitation_roles_role_id", "role_id"),
    )

    invitation_id: Mapped[UUID] = mapped_column(Uuid, _fk("invitations.id"))
    role_id: Mapped[UUID] = mapped_column(Uuid, _fk("roles.id"))


class SessionRow(Base):
    __tablename__ = "sessions"
    __table_args__ = (Index("ix_sessions_user_id", "user_id"),)

    id: Mapped[UUID] = mapped_column(Uuid, primary_key=True)
    user_id: Mapped[UUID] = mapped_column(Uuid, _fk("users.id"))
    token_hash: Mapped[str] = mapped_column(String(HASH_LENGTH))
    generation: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_reason: Mapped[str | None] = mapped_column(Text)
    ip: Mapped[str | None] = mapped_column(Text)
    user_agent: Mapped[str | None] = mapped_column(Text)


class OneTimeTokenRow(Base):
    __tablename__ = "one_time_tokens"
    __table_args__ = (
        UniqueConstraint("token_hash", name="uq_one_time_tokens_token_hash"),
        Index("ix_one_time_tokens_user_id_purpose", "user_id", "purpose"),
    )

    id: Mapped[UUID] = mapped_column(Uuid, primary_key=True)
    user_id: Mapped[UUID] = mapped_column(Uuid, _fk("users.id"))
    purpose: Mapped[str] = mapped_column(String(32))
    token_hash: Mapped[str] = mapped_column(String(HASH_LENGTH))
    email: Mapped[str] = mapped_column(String(EMAIL_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class OAuthAccountRow(Base):
    __tablename__ = "oauth_accounts"
    __table_args__ = (
        UniqueConstraint("provider", "subject", name="uq_oauth_accounts_provider_subject"),
        Index("ix_oauth_accounts_user_id", "user_id"),
    )

    id: Mapped[UUID] = mapped_column(Uuid, primary_key=True)
    user_id: Mapped[UUID] = mapped_column(Uuid, _fk("users.id"))
    provider: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(EMAIL_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AuditLogRow(Base):
    """Audit events: no foreign keys, so they outlive the users and organizations they name."""

    __tablename__ = "audit_logs"
    __table_args__ = (
        Index("ix_audit_logs_organization_id_id", "organization_id", "id"),
        Index("ix_audit_logs_organization_id_occurred_at", "organization_id", "occurred_at"),
        Index("ix_audit_logs_actor_user_id", "actor_user_id"),
        # 0002: the hash chain in order, and the filters of the query API (newest first).
        Index(
            "uq_audit_logs_organization_id_chain_seq", "organization_id", "chain_seq", unique=True
        ),
        Index("ix_audit_logs_organization_id_action_id", "organization_id", "action", "id"),
        Index(
            "ix_audit_logs_organization_id_actor_user_id_id",
            "organization_id",
            "actor_user_id",
            "id",
        ),
        Index("ix_audit_logs_organization_id_target_id_id", "organization_id", "target_id", "id"),
        Index("ix_audit_logs_occurred_at", "occurred_at"),
    )

    id: Mapped[UUID] = mapped_column(Uuid, primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    action: Mapped[str] = mapped_column(String(100))
    actor_user_id: Mapped[UUID | None] = mapped_column(Uuid)
    organization_id: Mapped[UUID | None] = mapped_column(Uuid)
    outcome: Mapped[str] = mapped_column(String(16))
    target_type: Mapped[str | None] = mapped_column(String(64))
    target_id: Mapped[str | None] = mapped_column(Text)
    ip: Mapped[str | None] = mapped_column(Text)
    user_agent: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONObjectType)
    chain_seq: Mapped[int] = mapped_column(BigInteger)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditChainHeadRow(Base):
    """The last event of each audit stream (organization id, or ``platform``).

    Appending an event updates its stream's row first; the row lock serialises appends
    to one stream (and only to that stream) until commit.
    """

    __tablename__ = "audit_chain_heads"

    stream: Mapped[str] = mapped_column(String(36), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class AuditArchiveBatchRow(Base):
    """The archive ledger: one row per uploaded and verified object; written in the
    transaction that deletes the events it holds."""

    __tablename__ = "audit_archive_batches"
    __table_args__ = (
        PrimaryKeyConstraint("stream", "first_seq", name="pk_audit_archive_batches"),
        UniqueConstraint("key", name="uq_audit_archive_batches_key"),
    )

    stream: Mapped[str] = mapped_column(String(36))
    first_seq: Mapped[int] = mapped_column(BigInteger)
    last_seq: Mapped[int] = mapped_column(BigInteger)
    min_occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    max_occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    key: Mapped[str] = mapped_column(String(512))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    event_count: Mapped[int] = mapped_column(Integer)
    archived_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LockoutCounterRow(Base):
    """The per-account lockout state shared by every process (0003, SECURITY.md F1).

    Keyed by the SHA-256 of the counter key (``login:<normalised email>``): the table
    holds no address. Times are seconds since the epoch from the application's clock, as
    in Redis. See :mod:`usermgmt.backends.sqlalchemy.attempts`.
    """

    __tablename__ = "lockout_counters"
    __table_args__ = (Index("ix_lockout_counters_updated_at", "updated_at"),)

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)  # reservations and failures since the last lock
    locked_until: Mapped[float] = mapped_column(Double)
    level: Mapped[int] = mapped_column(Integer)  # locks so far (the backoff exponent)
    updated_at: Mapped[float] = mapped_column(Double)
