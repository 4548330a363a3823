"""The runs repository: every SQL statement the dispatcher issues.

Each method works on a batch and costs a fixed number of statements whatever
the batch size. Writes go through `transaction()`, which yields a `RunsTx`;
infrastructure errors leave this module as `Unavailable`.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import (
    Select,
    String,
    TextClause,
    and_,
    any_,
    bindparam,
    delete,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from dispatcher import telemetry
from dispatcher.domain import webhooks
from dispatcher.domain.errors import Unavailable
from dispatcher.domain.models import (
    TERMINAL_STATES,
    Acked,
    EnqueueCall,
    Job,
    JobChange,
    JobState,
    LiveEntry,
    Priority,
    RetryPolicy,
    TerminalReason,
    Transition,
    job_from_columns,
)
from dispatcher.store.sql import pg_bulk, pg_driver, sqlite_bulk, sqlite_driver
from dispatcher.store.sql.engine import is_sqlite
from dispatcher.store.sql.held_connection import HeldConnection
from dispatcher.store.sql.newborn import Newborn
from dispatcher.store.sql.tables import (
    CALLS_KEY,
    FIRST_EVENT_IMPLIED,
    KEYED,
    KEYS_INDEX,
    RUN_EVENTS_COLUMN_NAMES,
    RUNS_COLUMN_NAMES,
    enqueue_calls,
    job_dependencies,
    run_events,
    runs,
    webhook_outbox,
)
from dispatcher.store.sql.unindexed import unindexed

LIVE_STATES = [s.value for s in JobState if s not in TERMINAL_STATES]
Changed = TypeVar("Changed", Job, Acked)  # what `RunStore._update_returning` decodes

# Columns a transition may change; `before.version` guards the write.
_MUTABLE = (
    "state",
    "attempt",
    "version",
    "run_at",
    "progress_percent",
    "progress_message",
    "started_at",
    "finished_at",
    "last_error",
    "result",
    "result_content_type",
    "lease_holder",
    "lease_token",
    "lease_expires_at",
    "lease_duration_ms",
    "cancel_requested",
    "terminal_reason",
    "lease_principal",
)


class AckHeld(NamedTuple):
    """One Ack item for `RunStore.ack_held`."""

    job_id: str
    token: str
    result: bytes
    result_content_type: str


class DuplicateKey(Exception):
    """An insert collided with an existing idempotency key (a concurrent enqueue)."""


class CallRecorded(Exception):
    """An insert met a request_id already recorded in `enqueue_calls`: the
    EnqueueBatch is a repeat (of a committed call, or of one committing now).
    Nothing of the statement or transaction was written."""


def violated(exc: IntegrityError, constraint: str, table: str) -> bool:
    """Whether a unique violation is of `constraint` (on `table`): PostgreSQL
    names the constraint, on asyncpg's error itself or under SQLAlchemy's
    adapter; SQLite names the table's columns in its message."""
    for err in (exc.orig, getattr(exc.orig, "__cause__", None)):
        if getattr(err, "constraint_name", None) == constraint:
            return True
    return f"UNIQUE constraint failed: {table}." in str(exc.orig)


@asynccontextmanager
async def translate_errors() -> AsyncIterator[None]:
    """Turn driver and connection failures into `Unavailable` at the store's edge."""
    try:
        yield
    except IntegrityError as exc:
        if violated(exc, CALLS_KEY, enqueue_calls.name):
            raise CallRecorded() from exc
        raise DuplicateKey() from exc
    except (TimeoutError, SQLAlchemyError, OSError) as exc:
        raise Unavailable("the database is unavailable") from exc


def _id_in(dialect: str, ids: Sequence[str]) -> Any:
    """`runs.id IN ids`. On PostgreSQL the ids go as one array parameter, so the
    statement text, and asyncpg's prepared statement, is the same for any count."""
    if dialect == "postgresql":
        return runs.c.id == any_(bindparam("ids", list(ids), type_=postgresql.ARRAY(String)))
    return runs.c.id.in_(list(ids))


def _to_json(value: dict[str, str] | list[str], empty: str) -> str:
    """Encode a JSON column; the empty value, by far the most common, costs nothing."""
    return json.dumps(value, separators=(",", ":")) if value else empty


def job_values(job: Job) -> tuple[Any, ...]:
    """A job's row as values in `runs.columns` order (a comment names the column
    where the value is not `job.<column>`): what PostgreSQL's bulk insert sends as one
    `run_row`, with no dict on the way (3.4 µs a job became 0.9, timeit)."""
    return (
        job.id,
        job.namespace,
        job.queue,
        job.type,
        job.payload,
        job.content_type,
        int(job.priority),  # priority
        _to_json(job.metadata, "{}"),  # metadata
        job.state.value,  # state
        job.attempt,
        job.max_attempts,
        job.retry_policy.initial_backoff_ms,  # retry_initial_ms
        job.retry_policy.max_backoff_ms,  # retry_max_ms
        job.retry_policy.multiplier,  # retry_multiplier
        job.retry_policy.jitter,  # retry_jitter
        job.lease_duration_ms,
        job.created_ms,  # created_at
        job.run_at_ms,  # run_at
        job.version,
        job.idempotency_key,
        job.progress_percent,
        job.progress_message,
        job.started_ms,  # started_at
        job.finished_ms,  # finished_at
        job.last_error,
        job.result,
        job.result_content_type,
        job.lease_holder,
        job.lease_token,
        job.lease_expires_ms,  # lease_expires_at
        _to_json(job.trace_context, "{}"),  # trace_context
        job.callback_url,
        job.cancel_requested,
        job.terminal_reason.value,  # terminal_reason
        job.start_deadline_ms,  # start_deadline_at
        job.max_run_ms,
        job.has_dependents,
        _to_json(job.depends_on, "[]"),  # depends_on
        job.concurrency_key,
        job.lease_principal,
    )


def _newborn_row() -> tuple[Any, ...]:
    """The row of a job as `Dispatcher` makes a new one, before any option: the
    values `newborn.NEWBORN_LITERALS` are written as."""
    job = Job(
        "", "", "", "", b"", "", Priority.DEFAULT, {}, JobState.QUEUED, 0, 1,
        RetryPolicy(), 0, 0, 0,
    )  # fmt: skip
    return job_values(job)


NEWBORN = Newborn(_newborn_row())
_SQLITE_NEWBORN_INSERT = sqlite_driver.NewbornInsert(NEWBORN)
_PG_NEWBORN_INSERTS = pg_bulk.newborn_inserts(NEWBORN.values)


def live_entries_statement(after_id: str, limit: int) -> Select[Any]:
    """`RunStore.live_entries`' query: a page of live rows after `after_id`, in id
    order. `unindexed`: on SQLite it walks the primary key from the cursor."""
    c = runs.c
    columns = (c.id, c.namespace, c.queue, c.version, c.state, c.priority, c.run_at)
    return (
        select(*columns, c.lease_expires_at, c.concurrency_key)
        .where(unindexed(c.state).in_(LIVE_STATES), c.id > after_id)
        .order_by(c.id)
        .limit(limit)
    )


_NEVER_LEASED = [JobState.QUEUED.value, JobState.SCHEDULED.value, JobState.WAITING.value]


def past_start_deadline_statement(now_ms: int, limit: int) -> Select[Any]:
    """`RunStore.past_start_deadline`'s query. `unindexed`: on SQLite it reads
    only the jobs that have a deadline (a partial index), not every live one."""
    return (
        select(runs.c.id)
        .where(
            runs.c.start_deadline_at <= now_ms,
            runs.c.attempt == 0,
            unindexed(runs.c.state).in_(_NEVER_LEASED),
        )
        .limit(limit)
    )


def call_values(call: EnqueueCall) -> tuple[Any, ...]:
    """A recorded call's row, in `enqueue_calls.columns` order."""
    return (call.namespace, call.request_id, call.created_ms, json.dumps(call.items))


_CALL_PARAMS = ("call_namespaces", "call_ids", "call_times", "call_items")


def _call_params(calls: Sequence[EnqueueCall]) -> dict[str, list[Any]]:
    """The calls of `pg_bulk.INSERT_JOBS`, one array per column."""
    columns = zip(*(call_values(c) for c in calls), strict=True) if calls else [()] * 4
    return {name: list(values) for name, values in zip(_CALL_PARAMS, columns, strict=True)}


def _call_of_row(r: Any) -> EnqueueCall:
    return EnqueueCall(r.namespace, r.request_id, r.created_at, tuple(json.loads(r.items)))


def job_to_row(job: Job) -> dict[str, Any]:
    return dict(zip(RUNS_COLUMN_NAMES, job_values(job), strict=True))


# PostgreSQL: after an insert found a key taken, how many inserts go straight to
# the statement that skips taken keys (`RunStore._insert_committed_pg`).
KEY_TAKEN_HOLD = 100


def _run_rows(jobs: Iterable[Job], calls: Sequence[EnqueueCall] = ()) -> dict[str, list[Any]]:
    """`pg_bulk.INSERT_JOBS`'s parameters: each job as one `run_row`, and the
    calls to record with them."""
    return {"rows": [job_values(j) for j in jobs]} | _call_params(calls)


_PRIORITIES = {p.value: p for p in Priority}  # a dict lookup is cheaper than Enum(value)
_STATES = {s.value: s for s in JobState}
_REASONS = {r.value: r for r in TerminalReason}


@functools.lru_cache(maxsize=256)
def _retry_policy(initial_ms: int, max_ms: int, multiplier: float, jitter: float) -> RetryPolicy:
    """Jobs share a handful of retry policies, and a frozen one can be shared."""
    return RetryPolicy(initial_ms, max_ms, multiplier, jitter)


def _acked(r: Any) -> Acked:
    """An `Acked` of a row of `ACKED_COLUMNS`."""
    id_, ns, queue, version, state, attempt, priority, run_at, expires, key, started, finished = r
    return Acked(
        id_, ns, queue, version, _STATES[state], attempt, _PRIORITIES[priority], run_at,
        expires, key, started, finished,
    )  # fmt: skip


def row_to_job(r: Sequence[Any]) -> Job:
    """The Job of a `select(runs)` row, unpacked by position in the table's
    column order: a lookup by name per column cost more than all the rest of
    the decoding. tests/unit/test_runs_rows.py round-trips a job whose columns
    all differ, so a misplaced name here fails it."""
    (
        id_, namespace, queue, type_, payload, content_type, priority, metadata,
        state, attempt, max_attempts, retry_initial_ms, retry_max_ms,
        retry_multiplier, retry_jitter, lease_duration_ms, created_at, run_at,
        version, idempotency_key, progress_percent, progress_message, started_at,
        finished_at, last_error, result, result_content_type, lease_holder,
        lease_token, lease_expires_at, trace_context, callback_url, cancel_requested,
        terminal_reason, start_deadline_at, max_run_ms, has_dependents, depends_on,
        concurrency_key, lease_principal,
    ) = r  # fmt: skip
    return job_from_columns(
        id=id_,
        namespace=namespace,
        queue=queue,
        type=type_,
        payload=bytes(payload),
        content_type=content_type,
        priority=_PRIORITIES[priority],
        metadata=_json(metadata, dict),
        state=_STATES[state],
        attempt=attempt,
        max_attempts=max_attempts,
        retry_policy=_retry_policy(retry_initial_ms, retry_max_ms, retry_multiplier, retry_jitter),
        lease_duration_ms=lease_duration_ms,
        created_ms=created_at,
        run_at_ms=run_at,
        version=version,
        idempotency_key=idempotency_key,
        progress_percent=progress_percent,
        progress_message=progress_message,
        started_ms=started_at,
        finished_ms=finished_at,
        last_error=last_error,
        result=bytes(result),
        result_content_type=result_content_type,
        lease_holder=lease_holder,
        lease_token=lease_token,
        lease_expires_ms=lease_expires_at,
        trace_context=_json(trace_context, dict),
        callback_url=callback_url,
        cancel_requested=bool(cancel_requested),
        terminal_reason=_REASONS[terminal_reason],
        start_deadline_ms=start_deadline_at,
        max_run_ms=max_run_ms,
        has_dependents=bool(has_dependents),
        depends_on=_json(depends_on, list),
        concurrency_key=concurrency_key,
        lease_principal=lease_principal,
        wait_reason="",
    )


def _first_events(jobs: Sequence[Job], inserted: set[str]) -> list[Transition]:
    """The first transitions of the new jobs that were inserted, at their creation,
    but for the implied QUEUED version 1 (as `pg_bulk.INSERT_JOBS` records)."""
    return [
        Transition(j.id, j.version, j.state, j.attempt, j.created_ms)
        for j in jobs
        if j.id in inserted and j.state is not FIRST_EVENT_IMPLIED
    ]


def _implied_first_event(job_id: str, created_ms: int) -> Transition:
    return Transition(job_id, 1, FIRST_EVENT_IMPLIED, 0, created_ms)


def event_values(t: Transition) -> tuple[Any, ...]:
    """A transition's `run_events` row as values in column order (`sqlite_driver`)."""
    return (t.job_id, t.version, t.state.value, t.attempt, t.at_ms, t.error)


def _event_row(t: Transition) -> dict[str, Any]:
    return dict(zip(RUN_EVENTS_COLUMN_NAMES, event_values(t), strict=True))


def _mutable_params(ch: JobChange) -> dict[str, Any]:
    """The UPDATE parameters of one change: only the columns a transition may touch."""
    j = ch.after
    return {
        "state": j.state.value,
        "attempt": j.attempt,
        "version": j.version,
        "run_at": j.run_at_ms,
        "progress_percent": j.progress_percent,
        "progress_message": j.progress_message,
        "started_at": j.started_ms,
        "finished_at": j.finished_ms,
        "last_error": j.last_error,
        "result": j.result,
        "result_content_type": j.result_content_type,
        "lease_holder": j.lease_holder,
        "lease_token": j.lease_token,
        "lease_expires_at": j.lease_expires_ms,
        "lease_duration_ms": j.lease_duration_ms,
        "cancel_requested": j.cancel_requested,
        "terminal_reason": j.terminal_reason.value,
        "lease_principal": j.lease_principal,
        "b_id": ch.before.id,
        "b_version": ch.before.version,
    }


def _json(text: str, empty: Any) -> Any:
    """Decode a JSON column; the empty value, by far the most common, costs nothing."""
    return empty() if text in ("{}", "[]") else json.loads(text)


def _needs_webhook(ch: JobChange) -> bool:
    return bool(ch.after.callback_url) and ch.after.state.terminal and not ch.before.state.terminal


def _outbox_row(ch: JobChange) -> dict[str, Any]:
    return {
        "job_id": ch.after.id,
        "namespace": ch.after.namespace,
        "url": ch.after.callback_url,
        "body": webhooks.event_body(ch.after, ch.at_ms),
        "created_at": ch.at_ms,
        "next_attempt_at": ch.at_ms,
        "attempts": 0,
        "state": "pending",
        "claimed_until": 0,
    }


_UPDATE = (
    update(runs)
    .where(and_(runs.c.id == bindparam("b_id"), runs.c.version == bindparam("b_version")))
    .values({c: bindparam(c) for c in _MUTABLE})
)

_PG_SAVE = pg_bulk.SaveStatement(_MUTABLE)


class RunsTx:
    """Statements inside one transaction."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def lock(self, ids: Iterable[str]) -> dict[str, Job]:
        """Read jobs by id, locking their rows (FOR UPDATE on PostgreSQL)."""
        ids = list(set(ids))
        if not ids:
            return {}
        stmt = select(runs).where(_id_in(self.conn.dialect.name, ids)).with_for_update()
        rows = (await self.conn.execute(stmt)).all()
        return {r.id: row_to_job(r) for r in rows}

    async def by_idempotency_keys(self, namespace: str, keys: Sequence[str]) -> dict[str, Job]:
        if not keys:
            return {}
        stmt = select(runs).where(
            runs.c.namespace == namespace, runs.c.idempotency_key.in_(set(keys))
        )
        rows = (await self.conn.execute(stmt)).all()
        return {r.idempotency_key: row_to_job(r) for r in rows}

    async def add_dependencies(self, edges: Sequence[tuple[str, str]]) -> None:
        """Record (job, depends_on) edges and flag the depended-on jobs."""
        if not edges:
            return
        await self.conn.execute(
            job_dependencies.insert(), [{"job_id": j, "depends_on": d} for j, d in edges]
        )
        targets = sorted({d for _, d in edges})
        await self.conn.execute(
            update(runs).where(runs.c.id.in_(targets)).values(has_dependents=True)
        )

    async def dependents_of(self, ids: Sequence[str]) -> list[str]:
        """Jobs that depend on any of `ids`."""
        if not ids:
            return []
        stmt = select(job_dependencies.c.job_id).where(job_dependencies.c.depends_on.in_(list(ids)))
        return sorted(set((await self.conn.execute(stmt)).scalars()))

    async def states(self, ids: Sequence[str]) -> dict[str, JobState]:
        if not ids:
            return {}
        stmt = select(runs.c.id, runs.c.state).where(runs.c.id.in_(list(set(ids))))
        return {r[0]: JobState(r[1]) for r in (await self.conn.execute(stmt)).all()}

    async def record_calls(self, calls: Sequence[EnqueueCall]) -> None:
        """Record EnqueueBatch calls made with a request_id. A request_id already
        recorded in its namespace raises `CallRecorded` at the transaction's
        edge (`translate_errors`), and the transaction is rolled back."""
        if calls:
            names = enqueue_calls.columns.keys()
            rows = [dict(zip(names, call_values(c), strict=True)) for c in calls]
            await self.conn.execute(enqueue_calls.insert(), rows)

    async def forget_calls(self, calls: Sequence[EnqueueCall]) -> None:
        """Delete recorded calls past their window (each if it is still the one
        read), so that their request_ids can be recorded again."""
        for call in calls:
            await self.conn.execute(
                delete(enqueue_calls).where(
                    enqueue_calls.c.namespace == call.namespace,
                    enqueue_calls.c.request_id == call.request_id,
                    enqueue_calls.c.created_at == call.created_ms,
                )
            )

    async def release_idempotency_keys(self, ids: Sequence[str]) -> None:
        """Free the keys of jobs whose idempotency window has passed."""
        if ids:
            stmt = update(runs).where(runs.c.id.in_(list(ids))).values(idempotency_key=None)
            await self.conn.execute(stmt)

    async def insert(self, jobs: Sequence[Job]) -> set[str]:
        """Insert new jobs and their first transition, skipping any job whose
        idempotency key is already taken in its namespace; return the ids inserted.

        The unique index itself finds the collisions (ON CONFLICT DO NOTHING), so
        the common case, a fresh key, costs no lookup; the caller looks up only the
        keys that collided. A concurrent insert of the same key on PostgreSQL makes
        this one wait for it, then skip.
        """
        if not jobs:
            return set()
        if self.conn.dialect.name == "postgresql":
            result = await self.conn.execute(pg_bulk.INSERT_JOBS, _run_rows(jobs))
            return {r.id for r in result.all()}
        rows = [job_to_row(j) for j in jobs]
        if any(j.idempotency_key for j in jobs):
            stmt = sqlite.insert(runs).on_conflict_do_nothing(
                index_elements=[runs.c.namespace, runs.c.idempotency_key],
                index_where=text(KEYED),  # the unique index is partial
            )
            result = await self.conn.execute(stmt.returning(runs.c.id), rows)
            inserted = {r.id for r in result.all()}
        else:
            await self.conn.execute(runs.insert(), rows)
            inserted = {j.id for j in jobs}
        events = [_event_row(t) for t in _first_events(jobs, inserted)]
        if events:
            await self.conn.execute(run_events.insert(), events)
        return inserted

    async def save(self, changes: Sequence[JobChange]) -> None:
        """Write each change's `after`; record an event for each state transition."""
        if not changes:
            return
        params = [_mutable_params(ch) for ch in changes]
        events = [_event_row(ch.event) for ch in changes if ch.after.version != ch.before.version]
        if self.conn.dialect.name == "postgresql":
            await self.conn.execute(_PG_SAVE.statement, _PG_SAVE.params(params, events))
        else:
            await self.conn.execute(_UPDATE, params)
            if events:
                await self.conn.execute(run_events.insert(), events)
        outbox = [_outbox_row(ch) for ch in changes if _needs_webhook(ch)]
        if outbox:  # in this transaction: a crash cannot drop a webhook
            await self.conn.execute(webhook_outbox.insert(), outbox)


class RunStore:
    """The runs repository over one engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        # SQLite has one writer; queueing writers here is cheaper than busy-waiting.
        self._write_lock = asyncio.Lock() if is_sqlite(str(engine.url)) else None
        self._insert_connection = HeldConnection(engine)  # PostgreSQL's inserts come one at a time
        self._skip_keys_for = 0  # inserts left that skip taken keys from the start

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[RunsTx]:
        """One write transaction; committed when the block exits without error."""
        with telemetry.span("sql.transaction"):
            async with translate_errors():
                if self._write_lock is None:
                    async with self.engine.begin() as conn:
                        yield RunsTx(conn)
                else:
                    async with self._write_lock, self.engine.begin() as conn:
                        yield RunsTx(conn)

    @property
    def _is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @property
    def commits_in_another_process(self) -> bool:
        """Whether a write's work is done by the database server (PostgreSQL),
        not by a thread of this process (SQLite, through aiosqlite)."""
        return self._is_postgres

    @asynccontextmanager
    async def _scan(self) -> AsyncIterator[AsyncConnection]:
        """A connection for a periodic scan of runs, planned for the table as it is now.

        PostgreSQL gives a prepared statement a generic plan after five runs and
        keeps it until the table is analyzed: without autovacuum, a sequential
        scan chosen while runs was nearly empty would stay as it grows, and these
        scans run on every pass (docs/architecture.md, PostgreSQL maintenance).
        Planning afresh costs one round trip per pass, nothing per job.
        """
        async with translate_errors(), self.engine.connect() as conn:
            if self._is_postgres:
                await conn.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
            yield conn

    async def lease_queued(
        self,
        namespace: str,
        grants: Sequence[tuple[str, str]],
        worker_id: str,
        now_ms: int,
        duration_ms: int | None,
        principal: str,
    ) -> dict[str, Job]:
        """Lease each (job id, token) whose job is plainly QUEUED, in one statement
        and its own transaction (on SQLite: one UPDATE, then its events); return
        the leased jobs by id.

        A job that is not QUEUED, is past its start deadline or is missing is
        left as it is, for the caller to decide in a transaction (see
        `pg_bulk.LEASE_QUEUED`). `duration_ms` None means each job's own.
        """
        if not grants:
            return {}
        statement = self.lease_queued_statement(
            namespace, grants, worker_id, now_ms, duration_ms, principal
        )
        with telemetry.span("sql.lease_queued"):
            return await self._update_returning(statement, now_ms, row_to_job)

    def lease_queued_statement(
        self,
        namespace: str,
        grants: Sequence[tuple[str, str]],
        worker_id: str,
        now_ms: int,
        duration_ms: int | None,
        principal: str,
    ) -> tuple[TextClause, dict[str, Any]]:
        """The UPDATE `lease_queued` runs on this dialect, and its parameters."""
        params: dict[str, Any] = {
            "namespace": namespace,
            "worker": worker_id,
            "now": now_ms,
            "duration": duration_ms,
            "principal": principal,
            "queued": JobState.QUEUED.value,
            "leased": JobState.LEASED.value,
        }
        if self._is_postgres:
            params["ids"] = [job_id for job_id, _ in grants]
            params["tokens"] = [token for _, token in grants]
            return pg_bulk.LEASE_QUEUED, params
        statement, values = sqlite_bulk.lease_queued(grants)
        return statement, params | values

    async def ack_held(
        self, namespace: str, acks: Sequence[AckHeld], now_ms: int, principal: str
    ) -> dict[str, Acked]:
        """Ack each job whose lease is still held under the given token, in one
        statement and its own transaction (on SQLite: one UPDATE, then its
        events); return the acked jobs by id, as far as `Acked` reads them.

        Only the plain case is taken: a job that is not held, is cancelled, has
        dependents or a callback URL is left as it is, for the caller to settle
        in a transaction (see `pg_bulk.ACK_HELD`). Each job id at most once.
        """
        if not acks:
            return {}
        statement = self.ack_held_statement(namespace, acks, now_ms, principal)
        with telemetry.span("sql.ack_held"):
            return await self._update_returning(statement, now_ms, _acked)

    def ack_held_statement(
        self, namespace: str, acks: Sequence[AckHeld], now_ms: int, principal: str
    ) -> tuple[TextClause, dict[str, Any]]:
        """The UPDATE `ack_held` runs on this dialect, and its parameters."""
        params: dict[str, Any] = {
            "namespace": namespace,
            "now": now_ms,
            "principal": principal,
            "leased": JobState.LEASED.value,
            "succeeded": JobState.SUCCEEDED.value,
            "succeeded_reason": TerminalReason.SUCCEEDED.value,
        }
        if self._is_postgres:
            params["ids"] = [a.job_id for a in acks]
            params["tokens"] = [a.token for a in acks]
            params["results"] = [a.result for a in acks]
            params["result_types"] = [a.result_content_type for a in acks]
            return pg_bulk.ACK_HELD, params
        statement, values = sqlite_bulk.ack_held(acks)
        return statement, params | values

    async def insert_committed(
        self, jobs: Sequence[Job], calls: Sequence[EnqueueCall] = ()
    ) -> set[str]:
        """`RunsTx.insert` in its own transaction, committed on return: on
        PostgreSQL one statement in autocommit, on SQLite one transaction on the
        aiosqlite connection itself (`sqlite_driver`). `calls` are recorded in
        the same write (`RunsTx.record_calls`); a request_id already recorded
        raises `CallRecorded`, with nothing written. Newborn jobs' rows go
        without the columns they share (`newborn.py`): on PostgreSQL when every
        row of the call is one (one statement, so the rows keep their order), on
        SQLite by runs of consecutive rows."""
        if not jobs:
            return set()
        rows = [job_values(j) for j in jobs]
        if self._is_postgres:
            inserts = pg_bulk.INSERTS
            if all(map(NEWBORN, rows)):
                rows, inserts = [NEWBORN.bound(r) for r in rows], _PG_NEWBORN_INSERTS
            with telemetry.span("sql.insert_committed"):
                params = {"rows": rows} | _call_params(calls)
                return await self._insert_committed_pg(params, inserts)

        assert self._write_lock is not None  # SQLite
        with telemetry.span("sql.insert_committed"):
            async with translate_errors(), self._write_lock, self.engine.connect() as conn:
                return await sqlite_driver.insert_runs(
                    conn,
                    rows,
                    lambda ids: [event_values(t) for t in _first_events(jobs, ids)],
                    [call_values(c) for c in calls],
                    _SQLITE_NEWBORN_INSERT,
                )

    async def _insert_committed_pg(
        self, params: dict[str, Any], inserts: pg_bulk.Inserts
    ) -> set[str]:
        """`insert_committed` on PostgreSQL: first as if every key were free
        (`pg_bulk.INSERT_NEW_JOBS`), which is cheaper; when a key is taken, that
        statement fails whole and the one that skips taken keys runs. For the
        next `KEY_TAKEN_HOLD` inserts that one runs from the start, so that a
        producer reusing keys on purpose pays the failed try once in so many
        inserts, not on every one."""
        async with translate_errors(), self._insert_connection.connection() as conn:
            if self._skip_keys_for > 0:
                self._skip_keys_for -= 1
            else:
                try:
                    rows = await pg_driver.fetch(conn, inserts.new_jobs, params)
                    return {r[0] for r in rows}
                except IntegrityError as exc:
                    if not violated(exc, KEYS_INDEX, runs.name):
                        raise
                    self._skip_keys_for = KEY_TAKEN_HOLD
            rows = await pg_driver.fetch(conn, inserts.all_jobs, params)
        return {r[0] for r in rows}

    async def _update_returning(
        self,
        statement: tuple[TextClause, dict[str, Any]],
        now_ms: int,
        decode: Callable[[Any], Changed],
    ) -> dict[str, Changed]:
        """Run an UPDATE ... RETURNING of `*_statement` and return the changed jobs
        by id, each row decoded by `decode`: on PostgreSQL one statement that also
        records their transitions, in autocommit; on SQLite (no data-modifying
        CTE) the UPDATE and then the events, in one transaction on the driver
        itself (`sqlite_driver`)."""
        if self._is_postgres:
            rows = await self._autocommit(*statement)
            return {r[0]: decode(r) for r in rows}
        jobs: dict[str, Changed] = {}

        def events_of(rows: Sequence[Any]) -> list[tuple[Any, ...]]:
            jobs.update((r[0], decode(r)) for r in rows)
            return [
                event_values(Transition(j.id, j.version, j.state, j.attempt, now_ms, ""))
                for j in jobs.values()
            ]

        assert self._write_lock is not None  # SQLite
        async with translate_errors(), self._write_lock, self.engine.connect() as conn:
            await sqlite_driver.update_returning(conn, *statement, events_of)
        return jobs

    async def _autocommit(
        self, statement: TextClause, params: dict[str, Any], held: HeldConnection | None = None
    ) -> Sequence[Any]:
        """Run one PostgreSQL statement as its own transaction (no BEGIN and
        COMMIT trips) and return its rows, on asyncpg directly (`pg_driver`);
        on the `held` connection if given, else on a pooled one."""
        connection = self.engine.connect() if held is None else held.connection()
        async with translate_errors(), connection as conn:
            return await pg_driver.fetch(conn, statement, params)

    async def recorded_calls(self, namespace: str, request_ids: Sequence[str]) -> list[EnqueueCall]:
        """The recorded EnqueueBatch calls of these request_ids in the namespace."""
        if not request_ids:
            return []
        stmt = select(enqueue_calls).where(
            enqueue_calls.c.namespace == namespace,
            enqueue_calls.c.request_id.in_(sorted(set(request_ids))),
        )
        async with translate_errors(), self.engine.connect() as conn:
            return [_call_of_row(r) for r in (await conn.execute(stmt)).all()]

    async def get(self, job_id: str) -> Job | None:
        async with translate_errors(), self.engine.connect() as conn:
            row = (await conn.execute(select(runs).where(runs.c.id == job_id))).first()
        return None if row is None else row_to_job(row)

    async def get_many(self, ids: Sequence[str]) -> dict[str, Job]:
        if not ids:
            return {}
        async with translate_errors(), self.engine.connect() as conn:
            stmt = select(runs).where(_id_in(conn.dialect.name, ids))
            rows = (await conn.execute(stmt)).all()
        return {r.id: row_to_job(r) for r in rows}

    async def events_after(self, versions: dict[str, int]) -> list[Transition]:
        """Transitions of each job newer than the given version, in version order
        (by job id, then version): a version 1 without its row is the implied
        QUEUED one (`FIRST_EVENT_IMPLIED`), read from the job's own row."""
        if not versions:
            return []
        cond = [
            and_(run_events.c.job_id == jid, run_events.c.version > v)
            for jid, v in versions.items()
        ]
        stmt = (
            select(run_events).where(or_(*cond)).order_by(run_events.c.job_id, run_events.c.version)
        )
        from_start = [jid for jid, v in versions.items() if v < 1]
        async with translate_errors(), self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
            found = [
                Transition(r.job_id, r.version, JobState(r.state), r.attempt, r.at, r.error)
                for r in rows
            ]
            written = {t.job_id for t in found if t.version == 1}
            implied = [jid for jid in from_start if jid not in written]
            if not implied:
                return found
            created = select(runs.c.id, runs.c.created_at).where(_id_in(conn.dialect.name, implied))
            firsts = [_implied_first_event(r.id, r.created_at) for r in await conn.execute(created)]
        return sorted(found + firsts, key=lambda t: (t.job_id, t.version))

    async def live_in_queue(self, namespace: str, queue: str, limit: int) -> list[Job]:
        stmt = (
            select(runs)
            .where(
                runs.c.namespace == namespace,
                runs.c.queue == queue,
                runs.c.state.in_(LIVE_STATES),
            )
            .order_by(runs.c.id)
            .limit(limit)
        )
        async with translate_errors(), self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [row_to_job(r) for r in rows]

    async def live_entries(self, after_id: str, limit: int) -> list[LiveEntry]:
        """Where each non-terminal job belongs in the index, in id order (the
        columns `placement` reads, not whole jobs), for the reconciler."""
        async with self._scan() as conn:
            rows = (await conn.execute(live_entries_statement(after_id, limit))).all()
        return [
            LiveEntry(id_, ns, q, v, _STATES[st], _PRIORITIES[pr], run_at, expires, key)
            for id_, ns, q, v, st, pr, run_at, expires, key in rows
        ]

    async def count_by_state(self) -> dict[str, int]:
        stmt = select(runs.c.state, func.count()).group_by(runs.c.state)
        async with translate_errors(), self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return {r[0]: r[1] for r in rows}

    async def past_start_deadline(self, now_ms: int, limit: int) -> list[str]:
        """Jobs never leased whose start deadline has passed."""
        async with self._scan() as conn:
            return list(
                (await conn.execute(past_start_deadline_statement(now_ms, limit))).scalars()
            )

    async def finished_before(self, cutoff_ms: int, limit: int) -> list[str]:
        """Terminal jobs that finished before the cutoff, oldest first."""
        stmt = (
            select(runs.c.id)
            .where(runs.c.finished_at < cutoff_ms)
            .order_by(runs.c.finished_at)
            .limit(limit)
        )
        async with self._scan() as conn:
            return list((await conn.execute(stmt)).scalars())

    async def ping(self) -> None:
        async with translate_errors(), self.engine.connect() as conn:
            await conn.execute(select(1))

    async def dispose(self) -> None:
        await self._insert_connection.close()
        await self.engine.dispose()


__all__ = ["DuplicateKey", "RunStore", "RunsTx"]
