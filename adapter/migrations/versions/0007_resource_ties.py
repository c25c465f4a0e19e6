"""Resource ties: what each stored resource touches for the referral model, indexed by the
patient, referral, coverage or identifier, so that the evaluation reads the store a chunk of
referrals at a time. Filled here for the resources already stored.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    from adapter.store import EVERYTHING, evaluation_targets, tie_key

    ties = op.create_table(
        "resource_tie",
        sa.Column("resource_type", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("target", sa.String(200), primary_key=True),
    )
    op.create_index("ix_resource_tie_target", "resource_tie", ["target"])
    resource = sa.table(
        "resource",
        sa.column("resource_type", sa.String),
        sa.column("id", sa.String),
        sa.column("body", sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")),
        sa.column("deleted", sa.Boolean),
    )
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(resource.c.resource_type, resource.c.id, resource.c.body)
        .where(resource.c.deleted.is_(False))
        .execution_options(stream_results=True, yield_per=1000)
    )
    batch: list[dict[str, str]] = []
    for resource_type, resource_id, body in rows:
        for target in sorted(evaluation_targets(body) - {EVERYTHING}):
            batch.append(
                {"resource_type": resource_type, "id": resource_id, "target": tie_key(target)}
            )
        if len(batch) >= 5000:
            op.bulk_insert(ties, batch)
            batch = []
    if batch:
        op.bulk_insert(ties, batch)


def downgrade() -> None:
    op.drop_index("ix_resource_tie_target", table_name="resource_tie")
    op.drop_table("resource_tie")
