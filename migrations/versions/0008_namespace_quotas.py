"""Per-namespace quotas: enqueue rate, live jobs, concurrent leases.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "namespace_quotas",
        sa.Column("namespace", sa.String(128), primary_key=True),
        sa.Column("enqueue_rate_per_s", sa.Float(), nullable=False),
        sa.Column("enqueue_burst", sa.BigInteger(), nullable=False),
        sa.Column("max_live_jobs", sa.BigInteger(), nullable=False),
        sa.Column("max_leases", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("namespace_quotas")
