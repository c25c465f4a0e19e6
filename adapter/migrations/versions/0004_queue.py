"""The work queue: the referral's arrival, due time, age, band and source in columns of their
own (filtered and sorted by the SMART view), and the view's server-side sessions.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("referral") as table:
        table.add_column(sa.Column("arrived_at", sa.DateTime(timezone=True), nullable=True))
        table.add_column(sa.Column("due_at", sa.DateTime(timezone=True), nullable=True))
        table.add_column(sa.Column("age_days", sa.Integer(), nullable=True))
        table.add_column(sa.Column("aging_band", sa.String(16), nullable=True))
        table.add_column(sa.Column("source", sa.String(160), nullable=True))
        table.add_column(
            sa.Column("high_relationship", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_index("ix_referral_queue", "referral", ["state", "primary_segment", "due_at"])
    op.create_index("ix_referral_arrived", "referral", ["state", "arrived_at"])
    op.create_index("ix_referral_source", "referral", ["source"])
    op.create_table(
        "web_session",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", JSON, nullable=False),
        sa.Column("secret", sa.Text(), nullable=True),
    )
    op.create_index("ix_web_session_expires_at", "web_session", ["expires_at"])


def downgrade() -> None:
    op.drop_table("web_session")
    op.drop_index("ix_referral_source", "referral")
    op.drop_index("ix_referral_arrived", "referral")
    op.drop_index("ix_referral_queue", "referral")
    with op.batch_alter_table("referral") as table:
        for column in (
            "high_relationship",
            "source",
            "aging_band",
            "age_days",
            "due_at",
            "arrived_at",
        ):
            table.drop_column(column)
