"""Incremental evaluation: each referral's instant of change (`stable_until`), the changes
waiting for the next evaluation, and the mark of the last evaluation.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("referral", sa.Column("stable_until", sa.DateTime(timezone=True)))
    op.create_table(
        "pending_evaluation",
        sa.Column("target", sa.String(200), primary_key=True),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "evaluation_mark",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
        sa.Column("utc_offset_seconds", sa.Integer(), nullable=False),
        sa.Column("rules_digest", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("evaluation_mark")
    op.drop_table("pending_evaluation")
    op.drop_column("referral", "stable_until")
