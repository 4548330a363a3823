"""Lifecycle: callback URLs and their webhook outbox, cancellation, terminal reasons,
per-queue settings.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("callback_url", sa.Text(), nullable=False, server_default=""))
        batch.add_column(
            sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(
            sa.Column("terminal_reason", sa.String(32), nullable=False, server_default="")
        )
    op.create_table(
        "webhook_outbox",
        sa.Column("id", _BIGID, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(26), nullable=False),
        sa.Column("namespace", sa.String(128), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("next_attempt_at", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("claimed_until", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_webhook_outbox_due", "webhook_outbox", ["state", "next_attempt_at"])
    op.create_table(
        "webhook_attempts",
        sa.Column("id", _BIGID, primary_key=True, autoincrement=True),
        sa.Column("outbox_id", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
    )
    op.create_index("ix_webhook_attempts_outbox", "webhook_attempts", ["outbox_id"])
    op.create_table(
        "queue_settings",
        sa.Column("namespace", sa.String(128), primary_key=True),
        sa.Column("queue", sa.String(128), primary_key=True),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("max_depth", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("queue_settings")
    op.drop_index("ix_webhook_attempts_outbox", table_name="webhook_attempts")
    op.drop_table("webhook_attempts")
    op.drop_index("ix_webhook_outbox_due", table_name="webhook_outbox")
    op.drop_table("webhook_outbox")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("terminal_reason")
        batch.drop_column("cancel_requested")
        batch.drop_column("callback_url")
