"""The SQL schema: the runs table is the durable record of every job.

Times are BIGINT Unix milliseconds (the same integers Lua and the domain use);
payloads and results are opaque bytes (never pickle). The migration in
migrations/versions/ creates exactly this; a test compares the two.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)

from dispatcher.domain.models import JobState

metadata = MetaData()

FINISHED = "finished_at IS NOT NULL"
HAS_DEADLINE = "start_deadline_at IS NOT NULL"
KEYED = "idempotency_key IS NOT NULL"  # the ON CONFLICT target names it too
KEYS_INDEX = "uq_runs_idempotency"  # unique per namespace, over keyed rows


def where(predicate: str) -> dict[str, Any]:
    """A partial index's predicate, on both dialects."""
    return {"postgresql_where": text(predicate), "sqlite_where": text(predicate)}


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
    Column("callback_url", Text, nullable=False, server_default=""),
    Column("cancel_requested", Boolean, nullable=False, server_default=false()),
    Column("terminal_reason", String(32), nullable=False, server_default=""),
    Column("start_deadline_at", BigInteger, nullable=True),  # not leased by then: expired
    Column("max_run_ms", BigInteger, nullable=True),  # one attempt, across heartbeats
    Column("has_dependents", Boolean, nullable=False, server_default=false()),
    Column("depends_on", Text, nullable=False, server_default="[]"),  # JSON list of job ids
    Column("concurrency_key", String(128), nullable=False, server_default=""),
    # The API key that holds the current lease: only it may heartbeat, ack or nack.
    Column("lease_principal", String(32), nullable=False, server_default=""),
    # Every transition rewrites the row, and on PostgreSQL a row update that changes
    # an indexed column (the state does) inserts into every index whose predicate
    # the new row meets. So each index that serves only some rows is partial: a
    # lease then touches two indexes, not six (see migration 0010).
    Index(
        KEYS_INDEX,
        "namespace",
        "idempotency_key",
        unique=True,
        **where(KEYED),
    ),
    # Rebuilding the Redis index and the reaper's checks scan live jobs by state.
    Index("ix_runs_state_queue", "state", "namespace", "queue", "priority", "id"),
    # Admin: recent throughput per queue.
    Index("ix_runs_finished", "namespace", "queue", "finished_at", **where(FINISHED)),
    Index("ix_runs_start_deadline", "start_deadline_at", **where(HAS_DEADLINE)),
    Index("ix_runs_finished_at", "finished_at", **where(FINISHED)),  # the retention sweep
)

# A job waits (WAITING) until every job it depends on succeeded.
job_dependencies = Table(
    "job_dependencies",
    metadata,
    Column("job_id", String(26), primary_key=True),
    Column("depends_on", String(26), primary_key=True),
    Index("ix_job_dependencies_on", "depends_on"),
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

# A job's version 1 is QUEUED at its creation unless `run_events` holds a row for
# it: a job born QUEUED (most are) gets no row for its first transition, which
# its `runs` row already implies (its id, its created_at), and
# `RunStore.events_after` derives it. Both insert paths leave it out
# (`pg_bulk.INSERT_JOBS`, `runs._first_events`). Not writing it took about a
# sixth of PostgreSQL's insert of 100 jobs (1.60-1.92 ms a call became
# 1.36-1.47, the backend's CPU 1.10-1.35 ms became 0.85-0.95; asyncpg,
# alternating, 6 rounds of 200). Every other first state (SCHEDULED, WAITING,
# CANCELLED) has its row, and so has the version 2 of a job inserted LEASED
# (handed to a waiting Lease).
FIRST_EVENT_IMPLIED = JobState.QUEUED

# EnqueueBatch calls made with a request_id: one row per call, written with its
# jobs in the same statement or transaction, so that a retried call finds what
# the first one did. `items` is a JSON list, one entry per item of the call: the
# id of the job created for it, or null where the item was refused. Kept for the
# idempotency window, then deleted by the retention sweep.
CALLS_KEY = "pk_enqueue_calls"  # the unique violation that says a call is a repeat
enqueue_calls = Table(
    "enqueue_calls",
    metadata,
    Column("namespace", String(128), nullable=False),
    Column("request_id", String(128), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("items", Text, nullable=False),
    PrimaryKeyConstraint("namespace", "request_id", name=CALLS_KEY),
    Index("ix_enqueue_calls_created", "created_at"),  # the retention sweep
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

_BIGID = BigInteger().with_variant(Integer(), "sqlite")

# One row per webhook to deliver, written in the transaction that makes the
# job terminal; `state` is pending, delivered or failed (given up).
webhook_outbox = Table(
    "webhook_outbox",
    metadata,
    Column("id", _BIGID, primary_key=True, autoincrement=True),
    Column("job_id", String(26), nullable=False),
    Column("namespace", String(128), nullable=False),
    Column("url", Text, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("next_attempt_at", BigInteger, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("claimed_until", BigInteger, nullable=False),
    Index("ix_webhook_outbox_due", "state", "next_attempt_at"),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", _BIGID, primary_key=True, autoincrement=True),
    Column("outbox_id", BigInteger, nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("status_code", Integer, nullable=False),  # 0 when no response came back
    Column("error", Text, nullable=False),
    Column("duration_ms", Integer, nullable=False),
    Index("ix_webhook_attempts_outbox", "outbox_id"),
)

queue_settings = Table(
    "queue_settings",
    metadata,
    Column("namespace", String(128), primary_key=True),
    Column("queue", String(128), primary_key=True),
    Column("paused", Boolean, nullable=False),
    Column("max_depth", BigInteger, nullable=False),  # 0: unbounded
    Column("updated_at", BigInteger, nullable=False),
    # Lease limits (0: none); the key_* ones apply to each concurrency key.
    Column("max_concurrency", BigInteger, nullable=False, server_default="0"),
    Column("rate_per_s", Float, nullable=False, server_default="0"),
    Column("burst", BigInteger, nullable=False, server_default="0"),
    Column("key_max_concurrency", BigInteger, nullable=False, server_default="0"),
    Column("key_rate_per_s", Float, nullable=False, server_default="0"),
    Column("key_burst", BigInteger, nullable=False, server_default="0"),
)

# Bearer tokens are "dsp_<id>_<secret>"; only the SHA-256 of the secret is kept.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("namespace", String(128), nullable=False),
    Column("roles", String(64), nullable=False),  # comma list: producer, worker, admin
    Column("secret_sha256", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
)

# Per-namespace quotas (0: none): enqueue rate, live (unfinished) jobs, concurrent leases.
namespace_quotas = Table(
    "namespace_quotas",
    metadata,
    Column("namespace", String(128), primary_key=True),
    Column("enqueue_rate_per_s", Float, nullable=False),
    Column("enqueue_burst", BigInteger, nullable=False),
    Column("max_live_jobs", BigInteger, nullable=False),
    Column("max_leases", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

# Recurring schedules (SQL only: nothing about them lives in Redis). A tick is
# claimed with a compare-and-set on claimed_until, its job enqueued with the
# idempotency key schedule:<id>:<tick>, then next_fire_at is advanced with a
# compare-and-set on its old value (dispatcher/service/schedules.py).
schedules = Table(
    "schedules",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("namespace", String(128), nullable=False),
    Column("name", String(128), nullable=False),
    Column("cron", String(256), nullable=False),  # "" for an interval schedule
    Column("interval_ms", BigInteger, nullable=True),  # NULL for a cron schedule
    Column("timezone", String(64), nullable=False),
    Column("template", Text, nullable=False),  # JSON of the job spec, payload in base64
    Column("misfire_policy", String(32), nullable=False),
    Column("paused", Boolean, nullable=False),
    Column("next_fire_at", BigInteger, nullable=False),
    Column("last_fire_at", BigInteger, nullable=True),
    Column("last_job_id", String(26), nullable=False),
    Column("last_error", Text, nullable=False),
    Column("claimed_until", BigInteger, nullable=False),  # a replica is firing it until then
    Column("created_at", BigInteger, nullable=False),
    UniqueConstraint("namespace", "name", name="uq_schedules_name"),
    Index("ix_schedules_due", "paused", "next_fire_at"),
)


# Column names in table order: the order of `runs.job_values` and
# `runs.event_values` tuples, and of the bulk inserts that take them.
RUNS_COLUMN_NAMES = tuple(c.name for c in runs.columns)
RUN_EVENTS_COLUMN_NAMES = tuple(c.name for c in run_events.columns)

# What an Ack reads back of each job it acked in one statement (`pg_bulk.ACK_HELD`,
# `sqlite_bulk.ack_held`): the fields of `models.Acked`, in their order. Qualified:
# the statements' FROM list has an `id` column of its own.
ACKED_COLUMNS = ", ".join(
    f"runs.{c}"
    for c in (
        "id", "namespace", "queue", "version", "state", "attempt", "priority", "run_at",
        "lease_expires_at", "concurrency_key", "started_at", "finished_at",
    )
)  # fmt: skip
