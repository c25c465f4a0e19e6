"""The initial store: resources, referrals, segment history, sync cursors, quarantine.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

# Written out here rather than imported, so that this revision stays as it was when the models
# move on.
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def instant(name: str, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "resource",
        sa.Column("resource_type", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("version_id", sa.String(64), nullable=True),
        sa.Column("version_num", sa.BigInteger(), nullable=True),
        instant("last_updated", nullable=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("body", JSON, nullable=False),
        instant("stored_at"),
    )
    op.create_table(
        "referral",
        sa.Column("key", sa.String(160), primary_key=True),
        sa.Column("patient", sa.String(160), nullable=True),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("primary_segment", sa.String(32), nullable=True),
        sa.Column("segments", JSON, nullable=False),
        sa.Column("evaluation", JSON, nullable=False),
        instant("evaluated_at"),
    )
    op.create_index("ix_referral_patient", "referral", ["patient"])
    op.create_table(
        "segment_history",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("referral_key", sa.String(160), nullable=False),
        sa.Column("from_state", sa.String(32), nullable=True),
        sa.Column("to_state", sa.String(32), nullable=False),
        sa.Column("from_segments", JSON, nullable=True),
        sa.Column("to_segments", JSON, nullable=False),
        sa.Column("from_primary", sa.String(32), nullable=True),
        sa.Column("to_primary", sa.String(32), nullable=True),
        instant("as_of"),
        sa.Column("reasons", JSON, nullable=False),
    )
    op.create_index("ix_segment_history_referral", "segment_history", ["referral_key", "id"])
    op.create_index("ix_segment_history_as_of", "segment_history", ["as_of"])
    op.create_table(
        "sync_cursor",
        sa.Column("base_url", sa.String(512), primary_key=True),
        sa.Column("resource_type", sa.String(64), primary_key=True),
        instant("value"),
        instant("updated_at"),
    )
    op.create_table(
        "quarantine",
        sa.Column("fingerprint", sa.String(64), primary_key=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("resource_type", sa.String(64), nullable=True),
        sa.Column("resource_id", sa.String(64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        instant("first_seen"),
        instant("last_seen"),
    )


def downgrade() -> None:
    for table in ("quarantine", "sync_cursor", "segment_history", "referral", "resource"):
        op.drop_table(table)
