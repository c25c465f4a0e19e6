"""Indexes for the work queue's counts, its high-relationship lane and its source filter, so
they read an index instead of every open referral's row (each row holds its evaluation); and
for the weekly review's reading of one period's resources of a type (its Communications), so
that it does not read every stored one.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_index("ix_referral_state_source", "referral", ["state", "source"])
    op.create_index(
        "ix_referral_high_relationship", "referral", ["state", "high_relationship", "due_at"]
    )
    op.create_index("ix_resource_type_updated", "resource", ["resource_type", "last_updated"])


def downgrade() -> None:
    op.drop_index("ix_resource_type_updated", table_name="resource")
    op.drop_index("ix_referral_high_relationship", table_name="referral")
    op.drop_index("ix_referral_state_source", table_name="referral")
