"""The login lockout counters in the database (SECURITY.md F1: the shared backstop).

``lockout_counters`` holds one row per account key that failed or is being tried: the
SHA-256 of the counter key (never the address), the reservations and failures since the
last lock (``count``), the end of the current lock and the backoff level, and the time
of the last change (seconds since the epoch). ``updated_at`` is indexed for the purge of
states left unlocked and untouched for a day. See
:mod:`usermgmt.backends.sqlalchemy.attempts`.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 12:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "lockout_counters",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.Double(), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_lockout_counters"),
    )
    op.create_index("ix_lockout_counters_updated_at", "lockout_counters", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_lockout_counters_updated_at", table_name="lockout_counters")
    op.drop_table("lockout_counters")
