"""PostgreSQL: insert new jobs and their first events in one statement, save
changed jobs and their events in another, lease queued jobs in a third and ack
held leases in a fourth.

SQLAlchemy's multi-row INSERT renders one VALUES tuple per row and binds 40
parameters per job; for a batch of 100 that costs about 12 ms of CPU before
the server sees it. Here the statement text never changes (asyncpg prepares it
once per connection) whatever the batch size. New jobs travel as one array of
the composite type `run_row` (migration 0011), a tuple per job, which `unnest`
turns back into rows: one array per column cost asyncpg two abstract-base-class
checks per element, and PostgreSQL 40 arrays to parse. Changes, leases and
acks bind one array per column (few columns each). The first transition of
every inserted job is written by the same statement, from the rows the insert
returned, so a job skipped for a taken idempotency key gets no event; a job
born QUEUED gets none either, its version 1 being implied by its row (and a
job inserted already LEASED, handed to a waiting Lease, gets its version 2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy import BigInteger, Boolean, Float, Integer, LargeBinary, TextClause, text
from sqlalchemy.types import TypeEngine

from dispatcher.store.sql.newborn import sql_literal
from dispatcher.store.sql.tables import (
    ACKED_COLUMNS,
    FIRST_EVENT_IMPLIED,
    KEYED,
    RUN_EVENTS_COLUMN_NAMES,
    RUNS_COLUMN_NAMES,
    run_events,
    runs,
)


def pg_type(sql_type: TypeEngine[Any]) -> str:
    """The PostgreSQL type a column's values travel as (varchar columns as text)."""
    # Order matters: BigInteger is an Integer.
    for python_type, pg in (
        (BigInteger, "bigint"),
        (Integer, "integer"),
        (Float, "double precision"),
        (Boolean, "boolean"),
        (LargeBinary, "bytea"),
    ):
        if isinstance(sql_type, python_type):
            return pg
    return "text"


COLUMNS = list(RUNS_COLUMN_NAMES)
EVENT_COLUMNS = ", ".join(f'"{c}"' for c in RUN_EVENTS_COLUMN_NAMES)


def _array(param: str, sql_type: TypeEngine[Any]) -> str:
    """A bound list, cast to the PostgreSQL array type of a column."""
    return f"CAST(:{param} AS {pg_type(sql_type)}[])"


def _statement(skip_taken_keys: bool, newborn: Mapping[str, Any] | None = None) -> TextClause:
    """The insert of new jobs; with `newborn` (column -> value), of newborn jobs'
    rows (`newborn_row`), those columns written as literals."""
    quoted = ", ".join(f'"{c}"' for c in COLUMNS)
    newborn = newborn or {}
    fields = ", ".join(
        sql_literal(newborn[c], postgres=True) if c in newborn else f'r."{c}"' for c in COLUMNS
    )
    row_type = "newborn_row" if newborn else "run_row"
    skip = f" ON CONFLICT (namespace, idempotency_key) WHERE {KEYED} DO NOTHING"
    return text(
        f"WITH inserted AS ("
        f" INSERT INTO runs ({quoted})"
        f" SELECT {fields} FROM unnest(CAST(:rows AS {row_type}[])) AS r"
        f"{skip if skip_taken_keys else ''}"
        f" RETURNING id, version, state, attempt, created_at"
        f"), events AS ("
        f" INSERT INTO run_events ({EVENT_COLUMNS})"
        f" SELECT id, version, state, attempt, created_at, '' FROM inserted"
        # A version 1 QUEUED at creation is the row's own start, and has no
        # event row (`tables.FIRST_EVENT_IMPLIED`): that also covers a job handed
        # to a waiting Lease, inserted LEASED at version 2, whose event is this.
        f" WHERE state <> '{FIRST_EVENT_IMPLIED.value}'"
        # The EnqueueBatch calls made with a request_id, recorded with their jobs
        # (none for most statements). No ON CONFLICT: a repeated call fails the
        # statement whole, on `tables.CALLS_KEY`.
        f"), calls AS ("
        f" INSERT INTO enqueue_calls (namespace, request_id, created_at, items)"
        f" SELECT * FROM unnest(CAST(:call_namespaces AS text[]),"
        f" CAST(:call_ids AS text[]), CAST(:call_times AS bigint[]),"
        f" CAST(:call_items AS text[]))"
        f") SELECT id FROM inserted"
    )


# Parameters: `rows`, each job as a `run_row` tuple, in COLUMNS order (`runs.job_values`);
# `call_*`, the recorded calls' columns (`runs._call_params`).
INSERT_JOBS = _statement(skip_taken_keys=True)
# The same for jobs whose keys are expected to be free: a taken key fails the
# whole statement (a unique violation of `uq_runs_idempotency`, nothing
# written), and the caller runs INSERT_JOBS instead. ON CONFLICT costs each
# keyed row a look into the unique index before its insert and a record
# confirming it after: measured with pgbench on a `runs` of 988,000 rows, 100
# keyed jobs took 1.86-2.04 ms to insert into `runs` this way against 2.19-2.38
# with it.
INSERT_NEW_JOBS = _statement(skip_taken_keys=False)


class Inserts(NamedTuple):
    """The two inserts of new jobs: expecting free keys, and skipping taken ones."""

    new_jobs: TextClause
    all_jobs: TextClause


INSERTS = Inserts(INSERT_NEW_JOBS, INSERT_JOBS)


def newborn_inserts(values: Mapping[str, Any]) -> Inserts:
    """The inserts for rows of newborn jobs (`newborn.Newborn`): `rows` holds
    each job as a `newborn_row` (migration 0013), the NEWBORN_COLUMNS of its
    row, and the other columns are `values` (column -> value) as literals.
    asyncpg encodes and PostgreSQL decodes a composite field by field: an
    insert of 100 benchmark jobs took 937 µs against 1,026, and 189 µs of the
    caller's CPU against 228 (medians of 400 alternating)."""
    return Inserts(_statement(False, values), _statement(True, values))


def _save_statement(mutable: Sequence[str]) -> TextClause:
    """UPDATE the changed jobs (guarded by their old version) and insert their events.

    Parameters: `b_id` and `b_version` (the row before), one array per mutable
    column, and `e_<column>` arrays for the run_events rows (may be empty).
    """
    guard = {"b_id": runs.c.id.type, "b_version": runs.c.version.type}
    arrays = [_array(name, sql_type) for name, sql_type in guard.items()]
    arrays += [_array(c, runs.c[c].type) for c in mutable]
    aliases = ", ".join([*guard, *(f'"{c}"' for c in mutable)])
    sets = ", ".join(f'"{c}" = changes."{c}"' for c in mutable)
    events = ", ".join(_array(f"e_{c.name}", c.type) for c in run_events.columns)
    return text(
        f"WITH changes AS ("
        f" SELECT * FROM unnest({', '.join(arrays)}) AS changes({aliases})"
        f"), updated AS ("
        f" UPDATE runs SET {sets} FROM changes"
        f" WHERE runs.id = changes.b_id AND runs.version = changes.b_version"
        f") INSERT INTO run_events ({EVENT_COLUMNS}) SELECT * FROM unnest({events})"
    )


class SaveStatement:
    """The PostgreSQL form of `RunsTx.save` for a given set of mutable columns."""

    def __init__(self, mutable: Sequence[str]) -> None:
        self.mutable = list(mutable)
        self.statement = _save_statement(mutable)

    def params(
        self, updates: Sequence[dict[str, Any]], events: Sequence[dict[str, Any]]
    ) -> dict[str, list[Any]]:
        """One array per parameter. A job changed twice (an item repeated in one
        call) is one row here, from its first version to its last: one UPDATE
        statement changes a row at most once, whereas one UPDATE per change
        applied them in turn."""
        merged: dict[str, dict[str, Any]] = {}
        for u in updates:
            first = merged.get(u["b_id"])
            merged[u["b_id"]] = u if first is None else {**u, "b_version": first["b_version"]}
        rows = list(merged.values())
        out = {name: [u[name] for u in rows] for name in ["b_id", "b_version", *self.mutable]}
        for c in run_events.columns:
            out[f"e_{c.name}"] = [e[c.name] for e in events]
        return out


_IDS = _array("ids", runs.c.id.type)  # the jobs an Ack or Lease statement is about


def _item(param: str, sql_type: TypeEngine[Any]) -> str:
    """This row's value in the bound array `param`, which holds one value per
    job in the order of `ids` (an `array_position` scan, in C, for each row)."""
    return f"({_array(param, sql_type)})[array_position({_IDS}, CAST(runs.id AS text))]"


def _ack_statement() -> TextClause:
    """Ack, in one statement, every job whose lease the caller still holds.

    The SET list is `transitions.ack`, written in SQL; the WHERE clause is its
    preconditions (and `_may_touch_lease`'s): the job is LEASED under this
    token, unexpired, not cancelled. Jobs with dependents or a callback URL are
    left out: their ack does more (wake dependents, queue a webhook), which the
    general path does. tests/service/test_ack_in_one_statement.py holds the
    result to `transitions.ack`. Returns the `ACKED_COLUMNS` of the acked rows,
    after the change.

    The rows are found by primary key only. The namespace and state tests are
    written as expressions no index covers (`|| ''`) on purpose: otherwise the
    planner may take ix_runs_state_queue (state first) and visit every leased
    row, and every dead index entry a past lease left, which it does when the
    statistics are stale, as they are on a table that just filled.

    Each job's own values (token, result) are looked up in the arrays by the
    job's place in `ids` (`_item`), not joined from an `unnest` of them: the
    planner, which expects one row from `ANY(ids)`, joined the two in a nested
    loop that read the whole `unnest` again for every row (n jobs, n² rows).
    EXPLAIN ANALYZE, 95 jobs of a table of 20,000: the Ack 3.6-4.1 ms that way
    against 1.8-3.6 now, the Lease 3.1-3.5 against 1.5-1.8; 500 jobs: the Ack
    60-85 against 17-19, the Lease 55 against 13. A join driven from the
    `unnest`, without `ANY`, was as fast here, but on a table still small it
    was planned as a scan of all of runs, each row joined to the whole
    `unnest`, with no test on `ids` to drop rows first; a prepared statement
    keeps such a plan for its lifetime (`engine.STATEMENT_LIFETIME_S`) while
    the table grows. Ids are unique in a call (`array_position` finds the
    first).
    """
    result = _item("results", runs.c.result.type)
    result_type = _item("result_types", runs.c.result_content_type.type)
    return text(
        f"WITH acked AS ("
        f" UPDATE runs SET state = :succeeded, terminal_reason = :succeeded_reason,"
        f" version = runs.version + 1, finished_at = CAST(:now AS bigint),"
        f" result = {result}, result_content_type = {result_type},"
        f" lease_expires_at = NULL, progress_percent = 100.0"
        f" WHERE runs.id = ANY({_IDS})"
        f" AND (runs.namespace || '') = :namespace AND (runs.state || '') = :leased"
        f" AND runs.lease_token = {_item('tokens', runs.c.lease_token.type)}"
        f" AND runs.lease_expires_at > CAST(:now AS bigint)"
        f" AND NOT runs.cancel_requested AND NOT runs.has_dependents"
        f" AND runs.callback_url = ''"
        f" AND (CAST(:principal AS text) = '' OR runs.lease_principal = ''"
        f" OR runs.lease_principal = CAST(:principal AS text))"
        f" RETURNING {ACKED_COLUMNS}"
        f"), events AS ("
        f" INSERT INTO run_events ({EVENT_COLUMNS})"
        f" SELECT id, version, state, attempt, CAST(:now AS bigint), '' FROM acked"
        f") SELECT * FROM acked"
    )


ACK_HELD = _ack_statement()


def _lease_statement() -> TextClause:
    """Lease, in one statement, every picked job that is plainly QUEUED.

    The SET list is `transitions.lease` (plus the caller's key id), written in
    SQL; every right-hand side reads the row as it was, so `lease_duration_ms`
    there is the job's own. The WHERE clause is its precondition: the job is
    QUEUED in the caller's namespace and not past its start deadline (that job
    is dead-lettered instead, by the general path). A job that is not plainly
    QUEUED is left as it is for the caller to decide in a transaction.
    tests/service/test_lease_in_one_statement.py holds the result to
    `transitions.lease`. Returns the leased rows, after the change. Rows are
    found by primary key only, and each one's token looked up by its place in
    `ids`, as in `_ack_statement`.
    """
    duration = "COALESCE(CAST(:duration AS bigint), runs.lease_duration_ms)"
    return text(
        f"WITH leased AS ("
        f" UPDATE runs SET state = :leased, attempt = runs.attempt + 1,"
        f" version = runs.version + 1, started_at = CAST(:now AS bigint),"
        f" lease_token = {_item('tokens', runs.c.lease_token.type)},"
        f" lease_holder = CAST(:worker AS text),"
        f" lease_duration_ms = {duration},"
        f" lease_expires_at = CAST(:now AS bigint)"
        f" + LEAST({duration}, COALESCE(runs.max_run_ms, {duration})),"
        f" progress_percent = 0.0, progress_message = '',"
        f" lease_principal = CAST(:principal AS text)"
        f" WHERE runs.id = ANY({_IDS})"
        f" AND (runs.namespace || '') = :namespace AND (runs.state || '') = :queued"
        f" AND NOT (runs.attempt = 0 AND runs.start_deadline_at IS NOT NULL"
        f" AND runs.start_deadline_at <= CAST(:now AS bigint))"
        f" RETURNING runs.*"
        f"), events AS ("
        f" INSERT INTO run_events ({EVENT_COLUMNS})"
        f" SELECT id, version, state, attempt, CAST(:now AS bigint), '' FROM leased"
        f") SELECT * FROM leased"
    )


LEASE_QUEUED = _lease_statement()
