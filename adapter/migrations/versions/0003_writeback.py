"""Write-back and staff actions: the outbox, the Tasks written, what planning remembers,
contact attempts, notes for the next person, owners, reviews and the audit trail.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def instant(name: str, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def text(name: str, length: int | None = None, nullable: bool = True) -> sa.Column[str]:
    kind = sa.String(length) if length else sa.Text()
    return sa.Column(name, kind, nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        text("key", 255, nullable=False),
        text("referral_key", 160, nullable=False),
        text("kind", 32, nullable=False),
        text("resource_type", 64, nullable=False),
        text("identifier", 255, nullable=False),
        sa.Column("resource", JSON, nullable=False),
        text("status", 16, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        instant("next_attempt_at"),
        instant("lease_until", nullable=True),
        instant("created_at"),
        instant("updated_at"),
        text("last_error"),
        sa.Column("outcome", JSON, nullable=True),
        text("written", 255),
        sa.UniqueConstraint("key"),
    )
    op.create_index("ix_outbox_referral_key", "outbox", ["referral_key"])
    op.create_index("ix_outbox_due", "outbox", ["status", "next_attempt_at"])
    op.create_table(
        "task_record",
        sa.Column("base_url", sa.String(512), primary_key=True),
        sa.Column("referral_key", sa.String(160), primary_key=True),
        text("task_id", 64, nullable=False),
        text("version_id", 64),
        sa.Column("body", JSON, nullable=False),
        instant("updated_at"),
    )
    op.create_table(
        "writeback_state",
        sa.Column("referral_key", sa.String(160), primary_key=True),
        sa.Column("task_seq", sa.Integer(), nullable=False),
        text("task_digest", 64),
        sa.Column("high_relationship", sa.Boolean(), nullable=False),
        sa.Column("was_missing", sa.Boolean(), nullable=False),
        instant("updated_at"),
    )
    op.create_table(
        "contact_attempt",
        sa.Column("id", sa.String(36), primary_key=True),
        text("referral_key", 160, nullable=False),
        text("patient", 160, nullable=False),
        instant("at"),
        text("channel", 32, nullable=False),
        text("outcome", 32, nullable=False),
        text("by_reference", 160),
        text("by_display", 200),
        text("note"),
        instant("recorded_at"),
    )
    op.create_index("ix_contact_attempt_referral_key", "contact_attempt", ["referral_key"])
    op.create_table(
        "referral_note",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        text("referral_key", 160, nullable=False),
        instant("written_at"),
        text("author_reference", 160),
        text("author_display", 200),
        text("contacted"),
        text("requested"),
        text("response"),
        sa.Column("still_missing", JSON, nullable=False),
        instant("next_attempt_due", nullable=True),
    )
    op.create_index("ix_referral_note_referral", "referral_note", ["referral_key", "id"])
    op.create_table(
        "referral_owner",
        sa.Column("referral_key", sa.String(160), primary_key=True),
        text("owner_reference", 160),
        text("owner_display", 200),
        instant("assigned_at"),
        text("assigned_by", 200),
    )
    op.create_table(
        "referral_review",
        sa.Column("referral_key", sa.String(160), primary_key=True),
        instant("reviewed_at"),
        text("reviewed_by", 200),
    )
    op.create_table(
        "audit_event",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        instant("at"),
        text("actor", 200, nullable=False),
        text("action", 64, nullable=False),
        text("referral_key", 160),
        text("patient_key", 160),
        sa.Column("detail", JSON, nullable=False),
    )
    op.create_index("ix_audit_event_at", "audit_event", ["at"])
    op.create_index("ix_audit_event_referral_key", "audit_event", ["referral_key"])


def downgrade() -> None:
    for table in (
        "audit_event",
        "referral_review",
        "referral_owner",
        "referral_note",
        "contact_attempt",
        "writeback_state",
        "task_record",
        "outbox",
    ):
        op.drop_table(table)
