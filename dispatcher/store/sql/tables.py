"""The SQL schema: the runs table is the durable record of every job.

Times are BIGINT Unix milliseconds (the same integers Lua and the domain use);
payloads and results are opaque bytes (never pickle). The migration in
migrations/versions/ creates exactly this; a test compares the two.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

runs = Table(
    "runs",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("namespace", String(128), nullable=False),
    Column("queue", String(128), nullable=False),
    Column("type", String(256), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("content_type", String(256), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("metadata", Text, nullable=False),  # JSON object of strings
    Column("state", String(16), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("retry_initial_ms", BigInteger, nullable=False),
    Column("retry_max_ms", BigInteger, nullable=False),
    Column("retry_multiplier", Float, nullable=False),
    Column("retry_jitter", Float, nullable=False),
    Column("lease_duration_ms", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("run_at", BigInteger, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("idempotency_key", String(256), nullable=True),
    Column("progress_percent", Float, nullable=False),
    Column("progress_message", Text, nullable=False),
    Column("started_at", BigInteger, nullable=True),
    Column("finished_at", BigInteger, nullable=True),
    Column("last_error", Text, nullable=False),
    Column("result", LargeBinary, nullable=False),
    Column("result_content_type", String(256), nullable=False),
    Column("lease_holder", String(256), nullable=False),
    Column("lease_token", String(64), nullable=False),
    Column("lease_expires_at", BigInteger, nullable=True),
    Column("trace_context", Text, nullable=False, server_default="{}"),  # JSON object
    UniqueConstraint("namespace", "idempotency_key", name="uq_runs_idempotency"),
    # Rebuilding the Redis index and the reaper's checks scan live jobs by state.
    Index("ix_runs_state_queue", "state", "namespace", "queue", "priority", "id"),
    # Admin: recent throughput per queue.
    Index("ix_runs_finished", "namespace", "queue", "finished_at"),
)

run_events = Table(
    "run_events",
    metadata,
    Column("job_id", String(26), primary_key=True),
    Column("version", BigInteger, primary_key=True),
    Column("state", String(16), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("error", Text, nullable=False),
)

admin_audit = Table(
    "admin_audit",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("at", BigInteger, nullable=False),
    Column("action", String(64), nullable=False),
    Column("namespace", String(128), nullable=False),
    Column("target", String(256), nullable=False),
    Column("detail", Text, nullable=False),
)
