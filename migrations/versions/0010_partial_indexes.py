"""Partial indexes on runs: an index that serves only some rows holds only those.

A transition rewrites its row, and on PostgreSQL an update that changes an
indexed column (the state always does) adds an entry to every index whose
predicate the new row meets. Four of the six indexes serve only rows with a
value in one column: jobs with an idempotency key, finished jobs (two), and
jobs with a start deadline. Made partial, a lease touches two indexes instead
of six and an ack four, and an insert without a key two.

The unique constraint on (namespace, idempotency_key) becomes a unique partial
index of the same name and meaning (NULL keys never collided); inserts name its
predicate in their ON CONFLICT target.

Each index is rebuilt, which blocks writes to runs while it builds: on a large
table, run this migration in a quiet moment.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

FINISHED = "finished_at IS NOT NULL"
# (name, columns, predicate); the predicates are those of dispatcher/store/sql/tables.py
PARTIAL = [
    ("ix_runs_finished", ["namespace", "queue", "finished_at"], FINISHED),
    ("ix_runs_finished_at", ["finished_at"], FINISHED),
    ("ix_runs_start_deadline", ["start_deadline_at"], "start_deadline_at IS NOT NULL"),
]
KEY_COLUMNS = ["namespace", "idempotency_key"]


def _where(predicate: str) -> dict[str, sa.TextClause]:
    return {"postgresql_where": sa.text(predicate), "sqlite_where": sa.text(predicate)}


def upgrade() -> None:
    for name, columns, predicate in PARTIAL:
        op.drop_index(name, table_name="runs")
        op.create_index(name, "runs", columns, **_where(predicate))
    # SQLite cannot drop a constraint in place: batch mode copies the table.
    with op.batch_alter_table("runs") as batch:
        batch.drop_constraint("uq_runs_idempotency", type_="unique")
    op.create_index(
        "uq_runs_idempotency",
        "runs",
        KEY_COLUMNS,
        unique=True,
        **_where("idempotency_key IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_runs_idempotency", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.create_unique_constraint("uq_runs_idempotency", KEY_COLUMNS)
    for name, columns, _ in PARTIAL:
        op.drop_index(name, table_name="runs")
        op.create_index(name, "runs", columns)
