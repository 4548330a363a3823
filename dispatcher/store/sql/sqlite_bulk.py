"""SQLite: lease queued jobs and ack held leases with one UPDATE each.

The same work as `pg_bulk.LEASE_QUEUED` and `pg_bulk.ACK_HELD`, in SQLite's
terms. SQLite has no `unnest` and no array parameters, so the per-job values
come in a VALUES list (one bound parameter per value; the statement text
depends only on the number of jobs, and sqlite3 caches the prepared form),
and it has no data-modifying CTE, so the caller inserts the `run_events`
rows with a second statement in the same transaction. The WHERE clauses are
the PostgreSQL ones: see `pg_bulk` for why each condition is there. The
`+column` form keeps SQLite from reaching rows through an index on that
column: they are found by primary key only.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import TextClause, text

from dispatcher.store.sql.tables import ACKED_COLUMNS


def _values(
    name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> tuple[str, dict[str, Any]]:
    """`name(columns) AS (VALUES (...), ...)` and its parameters, `{name}_{row}_{column}`."""
    return _values_sql(name, tuple(columns), len(rows)), {
        f"{name}_{i}_{j}": value for i, row in enumerate(rows) for j, value in enumerate(row)
    }


@functools.lru_cache(maxsize=256)
def _values_sql(name: str, columns: tuple[str, ...], n: int) -> str:
    tuples = (
        "(" + ", ".join(f":{name}_{i}_{j}" for j in range(len(columns))) + ")" for i in range(n)
    )
    return f"{name}({', '.join(columns)}) AS (VALUES {', '.join(tuples)})"


def lease_queued(grants: Sequence[tuple[str, str]]) -> tuple[TextClause, dict[str, Any]]:
    """`transitions.lease` for each (job id, token) whose job is plainly QUEUED.

    Named parameters besides the grants: namespace, worker, now, duration
    (None: each job's own), principal, queued, leased.
    """
    cte, params = _values("grants", ("id", "token"), grants)
    return _lease_queued(cte), params


@functools.lru_cache(maxsize=128)
def _lease_queued(cte: str) -> TextClause:
    """The statement for one VALUES list, built once per batch size: text()
    parses every bind name, which cost as much as the UPDATE itself."""
    duration = "COALESCE(:duration, runs.lease_duration_ms)"
    return text(
        f"WITH {cte}"
        f" UPDATE runs SET state = :leased, attempt = runs.attempt + 1,"
        f" version = runs.version + 1, started_at = :now,"
        f" lease_token = grants.token, lease_holder = :worker,"
        f" lease_duration_ms = {duration},"
        f" lease_expires_at = :now + MIN({duration}, COALESCE(runs.max_run_ms, {duration})),"
        f" progress_percent = 0.0, progress_message = '', lease_principal = :principal"
        f" FROM grants"
        f" WHERE runs.id = grants.id AND +runs.namespace = :namespace AND +runs.state = :queued"
        f" AND NOT (runs.attempt = 0 AND runs.start_deadline_at IS NOT NULL"
        f" AND runs.start_deadline_at <= :now)"
        f" RETURNING *"
    )


def ack_held(acks: Sequence[tuple[str, str, bytes, str]]) -> tuple[TextClause, dict[str, Any]]:
    """`transitions.ack` for each (job id, token, result, result type) whose lease is
    plainly held by the caller.

    Named parameters besides the acks: namespace, now, principal, leased,
    succeeded, succeeded_reason.
    """
    cte, params = _values("acks", ("id", "token", "result", "result_content_type"), acks)
    return _ack_held(cte), params


@functools.lru_cache(maxsize=128)
def _ack_held(cte: str) -> TextClause:
    """As `_lease_queued`: built once per batch size."""
    return text(
        f"WITH {cte}"
        f" UPDATE runs SET state = :succeeded, terminal_reason = :succeeded_reason,"
        f" version = runs.version + 1, finished_at = :now,"
        f" result = acks.result, result_content_type = acks.result_content_type,"
        f" lease_expires_at = NULL, progress_percent = 100.0"
        f" FROM acks"
        f" WHERE runs.id = acks.id AND +runs.namespace = :namespace AND +runs.state = :leased"
        f" AND runs.lease_token = acks.token AND runs.lease_expires_at > :now"
        f" AND NOT runs.cancel_requested AND NOT runs.has_dependents"
        f" AND runs.callback_url = ''"
        f" AND (:principal = '' OR runs.lease_principal = '' OR runs.lease_principal = :principal)"
        f" RETURNING {ACKED_COLUMNS}"
    )
