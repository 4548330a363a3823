"""Concurrency and rate limits: per queue, and per concurrency key.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_LIMITS = [
    ("max_concurrency", sa.BigInteger()),
    ("rate_per_s", sa.Float()),
    ("burst", sa.BigInteger()),
    ("key_max_concurrency", sa.BigInteger()),
    ("key_rate_per_s", sa.Float()),
    ("key_burst", sa.BigInteger()),
]


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(
            sa.Column("concurrency_key", sa.String(128), nullable=False, server_default="")
        )
    with op.batch_alter_table("queue_settings") as batch:
        for name, type_ in _LIMITS:
            batch.add_column(sa.Column(name, type_, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("queue_settings") as batch:
        for name, _ in reversed(_LIMITS):
            batch.drop_column(name)
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("concurrency_key")
