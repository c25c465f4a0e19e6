"""An index on the outbox by referral, kind and status: a new Task entry supersedes the
referral's pending ones, and with only the status index SQLite read every pending entry to find
them (once per page of a sync that evaluates page by page).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_index("ix_outbox_referral_task", "outbox", ["referral_key", "kind", "status"])


def downgrade() -> None:
    op.drop_index("ix_outbox_referral_task", table_name="outbox")
