"""enqueue_calls: EnqueueBatch calls made with a request_id.

A producer that sends one request_id per EnqueueBatch call (AIP-155) instead
of an idempotency key per job makes its retries safe with one row per call
here, written with the call's jobs, where keys cost each job an entry in the
unique index on (namespace, idempotency_key). A repeated call finds its row
and is answered with the jobs the first call created. Rows are kept for the
idempotency window, then deleted by the retention sweep (hence the index on
created_at).

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "enqueue_calls",
        sa.Column("namespace", sa.String(128), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("items", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("namespace", "request_id", name="pk_enqueue_calls"),
    )
    op.create_index("ix_enqueue_calls_created", "enqueue_calls", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_enqueue_calls_created", table_name="enqueue_calls")
    op.drop_table("enqueue_calls")
