"""Initial schema: the tables of SPEC §3.

Hand-checked against ``usermgmt.backends.sqlalchemy.models`` (the migration test
asserts that autogenerate finds no difference on SQLite and PostgreSQL).

* Times are ``timestamptz`` on PostgreSQL (naive UTC on SQLite), ids native ``uuid``
  (``CHAR(32)`` on SQLite), free JSON objects ``jsonb`` (JSON text on SQLite).
* Deleting an organization cascades to its roles, memberships and invitations and
  from them to the link tables (R11); ``audit_logs`` has no foreign key at all.
* ``uq_users_lower_email`` makes emails unique case-insensitively (R1).

Revision ID: 0001
Revises:
Create Date: 2026-01-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _id() -> sa.Column[Any]:
    return sa.Column("id", sa.Uuid(), nullable=False)


def _uuid(name: str, *, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(name, sa.Uuid(), nullable=nullable)


def _time(name: str, *, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _json(name: str) -> sa.Column[Any]:
    json_type = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    return sa.Column(name, json_type, nullable=False)


def _fk(
    column: str, target: str, table: str, *, on_delete: str = "CASCADE"
) -> sa.ForeignKeyConstraint:
    target_table = target.split(".")[0]
    return sa.ForeignKeyConstraint(
        [column], [target], name=f"fk_{table}_{column}_{target_table}", ondelete=on_delete
    )


def upgrade() -> None:
    op.create_table(
        "users",
        _id(),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("password_hash", sa.Text(), nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("is_verified", sa.Boolean(), nullable=False),
        sa.Column("is_superuser", sa.Boolean(), nullable=False),
        sa.Column("must_reset_password", sa.Boolean(), nullable=False),
        _json("metadata"),
        _time("email_verified_at", nullable=True),
        _time("last_login_at", nullable=True),
        _time("deactivated_at", nullable=True),
        _time("created_at"),
        _time("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
    )
    op.create_index("uq_users_lower_email", "users", [sa.text("lower(email)")], unique=True)

    op.create_table(
        "organizations",
        _id(),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("slug", sa.String(length=100), nullable=False),
        _json("metadata"),
        _time("created_at"),
        _time("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_organizations"),
        sa.UniqueConstraint("slug", name="uq_organizations_slug"),
    )

    op.create_table(
        "permissions",
        _id(),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("is_system", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_permissions"),
        sa.UniqueConstraint("name", name="uq_permissions_name"),
    )

    op.create_table(
        "roles",
        _id(),
        _uuid("organization_id"),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("is_system", sa.Boolean(), nullable=False),
        _time("created_at"),
        _time("updated_at"),
        _fk("organization_id", "organizations.id", "roles"),
        sa.PrimaryKeyConstraint("id", name="pk_roles"),
        sa.UniqueConstraint("organization_id", "name", name="uq_roles_organization_id_name"),
    )

    op.create_table(
        "role_permissions",
        _uuid("role_id"),
        _uuid("permission_id"),
        _fk("role_id", "roles.id", "role_permissions"),
        _fk("permission_id", "permissions.id", "role_permissions"),
        sa.PrimaryKeyConstraint("role_id", "permission_id", name="pk_role_permissions"),
    )
    op.create_index("ix_role_permissions_permission_id", "role_permissions", ["permission_id"])

    op.create_table(
        "organization_memberships",
        _id(),
        _uuid("organization_id"),
        _uuid("user_id"),
        sa.Column("version", sa.Integer(), nullable=False),
        _time("joined_at"),
        _time("updated_at"),
        _fk("organization_id", "organizations.id", "organization_memberships"),
        _fk("user_id", "users.id", "organization_memberships"),
        sa.PrimaryKeyConstraint("id", name="pk_organization_memberships"),
        sa.UniqueConstraint(
            "organization_id",
            "user_id",
            name="uq_organization_memberships_organization_id_user_id",
        ),
    )
    op.create_index(
        "ix_organization_memberships_user_id", "organization_memberships", ["user_id"]
    )
    op.create_index(
        "ix_organization_memberships_organization_id_id",
        "organization_memberships",
        ["organization_id", "id"],
    )

    op.create_table(
        "membership_roles",
        _uuid("membership_id"),
        _uuid("role_id"),
        _fk("membership_id", "organization_memberships.id", "membership_roles"),
        _fk("role_id", "roles.id", "membership_roles"),
        sa.PrimaryKeyConstraint("membership_id", "role_id", name="pk_membership_roles"),
    )
    op.create_index("ix_membership_roles_role_id", "membership_roles", ["role_id"])

    op.create_table(
        "invitations",
        _id(),
        _uuid("organization_id"),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("token_hash", sa.String(length=128), nullable=False),
        _uuid("invited_by", nullable=True),
        _time("created_at"),
        _time("expires_at"),
        _time("accepted_at", nullable=True),
        _uuid("accepted_by", nullable=True),
        _time("revoked_at", nullable=True),
        _fk("organization_id", "organizations.id", "invitations"),
        _fk("invited_by", "users.id", "invitations", on_delete="SET NULL"),
        _fk("accepted_by", "users.id", "invitations", on_delete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name="pk_invitations"),
        sa.UniqueConstraint("token_hash", name="uq_invitations_token_hash"),
    )
    op.create_index(
        "ix_invitations_organization_id_id", "invitations", ["organization_id", "id"]
    )

    op.create_table(
        "invitation_roles",
        _uuid("invitation_id"),
        _uuid("role_id"),
        _fk("invitation_id", "invitations.id", "invitation_roles"),
        _fk("role_id", "roles.id", "invitation_roles"),
        sa.PrimaryKeyConstraint("invitation_id", "role_id", name="pk_invitation_roles"),
    )
    op.create_index("ix_invitation_roles_role_id", "invitation_roles", ["role_id"])

    op.create_table(
        "sessions",
        _id(),
        _uuid("user_id"),
        sa.Column("token_hash", sa.String(length=128), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        _time("created_at"),
        _time("last_used_at"),
        _time("expires_at"),
        _time("revoked_at", nullable=True),
        sa.Column("revoked_reason", sa.Text(), nullable=True),
        sa.Column("ip", sa.Text(), nullable=True),
        sa.Column("user_agent", sa.Text(), nullable=True),
        _fk("user_id", "users.id", "sessions"),
        sa.PrimaryKeyConstraint("id", name="pk_sessions"),
    )
    op.create_index("ix_sessions_user_id", "sessions", ["user_id"])

    op.create_table(
        "one_time_tokens",
        _id(),
        _uuid("user_id"),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("token_hash", sa.String(length=128), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        _time("created_at"),
        _time("expires_at"),
        _time("used_at", nullable=True),
        _fk("user_id", "users.id", "one_time_tokens"),
        sa.PrimaryKeyConstraint("id", name="pk_one_time_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_one_time_tokens_token_hash"),
    )
    op.create_index(
        "ix_one_time_tokens_user_id_purpose", "one_time_tokens", ["user_id", "purpose"]
    )

    op.create_table(
        "oauth_accounts",
        _id(),
        _uuid("user_id"),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        _time("created_at"),
        _fk("user_id", "users.id", "oauth_accounts"),
        sa.PrimaryKeyConstraint("id", name="pk_oauth_accounts"),
        sa.UniqueConstraint("provider", "subject", name="uq_oauth_accounts_provider_subject"),
    )
    op.create_index("ix_oauth_accounts_user_id", "oauth_accounts", ["user_id"])

    op.create_table(
        "audit_logs",
        _id(),
        _time("occurred_at"),
        sa.Column("action", sa.String(length=100), nullable=False),
        _uuid("actor_user_id", nullable=True),
        _uuid("organization_id", nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("target_type", sa.String(length=64), nullable=True),
        sa.Column("target_id", sa.Text(), nullable=True),
        sa.Column("ip", sa.Text(), nullable=True),
        sa.Column("user_agent", sa.Text(), nullable=True),
        sa.Column("request_id", sa.Text(), nullable=True),
        _json("metadata"),
        sa.PrimaryKeyConstraint("id", name="pk_audit_logs"),
    )
    op.create_index("ix_audit_logs_organization_id_id", "audit_logs", ["organization_id", "id"])
    op.create_index(
        "ix_audit_logs_organization_id_occurred_at",
        "audit_logs",
        ["organization_id", "occurred_at"],
    )
    op.create_index("ix_audit_logs_actor_user_id", "audit_logs", ["actor_user_id"])


def downgrade() -> None:
    # Dependents first; dropping a table drops its indexes.
    for table in (
        "audit_logs",
        "oauth_accounts",
        "one_time_tokens",
        "sessions",
        "invitation_roles",
        "invitations",
        "membership_roles",
        "organization_memberships",
        "role_permissions",
        "roles",
        "permissions",
        "organizations",
        "users",
    ):
        op.drop_table(table)
