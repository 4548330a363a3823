"""Timeouts (start deadline, maximum run time), dependencies, and indexes for the
deadline and retention sweeps.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("start_deadline_at", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("max_run_ms", sa.BigInteger(), nullable=True))
        batch.add_column(
            sa.Column("has_dependents", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("depends_on", sa.Text(), nullable=False, server_default="[]"))
    op.create_index("ix_runs_start_deadline", "runs", ["start_deadline_at"])
    op.create_index("ix_runs_finished_at", "runs", ["finished_at"])
    op.create_table(
        "job_dependencies",
        sa.Column("job_id", sa.String(26), primary_key=True),
        sa.Column("depends_on", sa.String(26), primary_key=True),
    )
    op.create_index("ix_job_dependencies_on", "job_dependencies", ["depends_on"])


def downgrade() -> None:
    op.drop_index("ix_job_dependencies_on", table_name="job_dependencies")
    op.drop_table("job_dependencies")
    op.drop_index("ix_runs_finished_at", table_name="runs")
    op.drop_index("ix_runs_start_deadline", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("depends_on")
        batch.drop_column("has_dependents")
        batch.drop_column("max_run_ms")
        batch.drop_column("start_deadline_at")
