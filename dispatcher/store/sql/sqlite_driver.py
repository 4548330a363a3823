"""SQLite's plain Enqueue insert, Lease and Ack, run on the pooled aiosqlite
connection itself.

aiosqlite runs every call on its own thread, so each call is a hop there and
back. Through SQLAlchemy's aiosqlite adapter one statement is several hops (a
cursor, the execute, the fetch, the close) besides SQLAlchemy's own work per
statement: a lease of one job took 4.0-6.2 ms that way and 2.6 ms here, one of
50 jobs 7.9-9.4 ms and 4.8-5.3 ms (2-core machine, in-process). A shorter
write transaction also holds SQLite's single writer for less time. Here a
transaction is one hop (`_transaction`): BEGIN IMMEDIATE, the UPDATE ...
RETURNING and its rows (or the INSERT of new jobs), the insert of the events
made from them and COMMIT run together on aiosqlite's thread. It was four
hops, one per statement, through aiosqlite's public API: rounds of a Lease
of 20 jobs and their Ack, 3 runs each way, took 702-764 µs of the process's
CPU and 840-913 µs per transaction that way, 582-630 µs and 694-755 µs in
one hop.

The UPDATE statements are `sqlite_bulk`'s: their `:name` placeholders are
sqlite3's named style, so they run as written. `INSERT_RUNS` and
`INSERT_EVENTS` here are positional, with one tuple per row in column order:
sqlite3 binds a named parameter by a lookup in the row's dict, and 100 jobs
converted and inserted cost 15.3-15.8 µs a job that way against 9.4-9.5 as
tuples (timeit, median of 300, in-memory database, 2-core machine). A new job as
most are born (`newborn.py`) binds 18 values, not 40: `NewbornInsert`.

The connection comes from SQLAlchemy's pool and goes back to it. SQLAlchemy
never began a transaction on it, so it may not roll one back on return:
every way out of here that does not commit rolls back first. Errors leave as
SQLAlchemy's, for `runs.translate_errors` to map: a constraint violation as
`IntegrityError`, anything else from the driver as `DBAPIError`.
"""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import aiosqlite
from sqlalchemy import TextClause
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from dispatcher.store.sql.newborn import Newborn, sql_literal
from dispatcher.store.sql.tables import (
    KEYED,
    RUN_EVENTS_COLUMN_NAMES,
    RUNS_COLUMN_NAMES,
    enqueue_calls,
)

INSERT_EVENTS = (  # rows as `runs.event_values` tuples
    f"INSERT INTO run_events ({', '.join(RUN_EVENTS_COLUMN_NAMES)})"
    f" VALUES ({', '.join('?' * len(RUN_EVENTS_COLUMN_NAMES))})"
)


def _insert_runs(values: Sequence[str]) -> str:
    """The insert of rows with these VALUES, `?` or a literal per column.

    A job whose idempotency key is taken in its namespace is skipped, as
    `RunsTx.insert` does (the unique index on keys is partial, hence the WHERE).
    """
    return (
        f"INSERT INTO runs ({', '.join(RUNS_COLUMN_NAMES)}) VALUES ({', '.join(values)})"
        f" ON CONFLICT (namespace, idempotency_key) WHERE {KEYED} DO NOTHING"
    )


# Positional: rows come as `runs.job_values` tuples, id first.
INSERT_RUNS = _insert_runs("?" * len(RUNS_COLUMN_NAMES))
# A repeated call (its request_id recorded) fails the transaction whole.
INSERT_CALLS = (
    f"INSERT INTO {enqueue_calls.name} VALUES ({', '.join('?' * len(enqueue_calls.columns))})"
)
_IDS_PER_LOOKUP = 500  # below SQLite's oldest limit on bound parameters (999)


T = TypeVar("T")


class NewbornInsert:
    """INSERT_RUNS for the rows of newborn jobs (`newborn.Newborn`): the columns
    they hold one value in are literals in the statement, and such rows travel
    without them. sqlite3 converts and binds each parameter of each row: 100
    rows took 700-758 µs to insert with all 40 bound, 545 with the 16 state
    columns as literals, 464-469 with the 22 of NEWBORN_LITERALS (CPU, median of
    300 transactions, WAL file database, 2-core machine)."""

    def __init__(self, newborn: Newborn) -> None:
        self._newborn = newborn
        self.statement = _insert_runs(
            [
                sql_literal(newborn.values[c], postgres=False) if c in newborn.values else "?"
                for c in RUNS_COLUMN_NAMES
            ]
        )

    def statements(
        self, rows: Sequence[tuple[Any, ...]]
    ) -> list[tuple[str, list[tuple[Any, ...]]]]:
        """(statement, rows) to run in turn: the rows in their order, each run of
        consecutive newborn rows as this statement, each other run as INSERT_RUNS
        (order matters: of two jobs with one key, the first is inserted)."""
        out: list[tuple[str, list[tuple[Any, ...]]]] = []
        bound = self._newborn.bound
        for newborn, run in itertools.groupby(rows, self._newborn):
            if newborn:
                out.append((self.statement, [bound(r) for r in run]))
            else:
                out.append((INSERT_RUNS, list(run)))
        return out


async def _transaction(
    conn: AsyncConnection, what: str, work: Callable[[sqlite3.Connection], T]
) -> T:
    """Run `work` in a write transaction on `conn`'s sqlite3 connection, in one
    trip to aiosqlite's thread: BEGIN IMMEDIATE, `work`, COMMIT; rolled back
    on any failure. `what` names it in errors.

    One trip, not one per statement: each trip is a hand-over to that thread
    and a wake-up of the event loop on the way back, and the thread needs the
    interpreter lock for each, which the loop may be holding. aiosqlite has no
    public call for "run this function on the connection's thread", so this
    uses the one its own methods are made of (`Connection._execute`), with
    the sqlite3 connection it wraps; tests/service/test_sqlite_driver.py
    fails if either goes away.

    A cancelled caller does not stop the transaction: it commits or rolls back
    on the thread all the same, as a cancel during COMMIT always could, and
    the jobs it committed are in SQL, where the reconciler and the reaper find
    them.
    """
    driver = (await conn.get_raw_connection()).driver_connection
    assert isinstance(driver, aiosqlite.Connection)
    try:
        out: T = await driver._execute(_in_transaction, driver._conn, work)  # type: ignore[no-untyped-call]
        return out
    except sqlite3.IntegrityError as exc:
        raise IntegrityError(what, None, exc) from exc
    except sqlite3.Error as exc:
        raise DBAPIError(what, None, exc) from exc


def _in_transaction(db: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """On aiosqlite's thread: `work` between BEGIN IMMEDIATE and COMMIT."""
    db.execute("BEGIN IMMEDIATE")
    try:
        out = work(db)
        db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):  # none open: nothing to undo
            db.execute("ROLLBACK")
        raise
    return out


async def update_returning(
    conn: AsyncConnection,
    statement: TextClause,
    params: dict[str, Any],
    events_of: Callable[[Sequence[Any]], Sequence[tuple[Any, ...]]],
) -> Sequence[Any]:
    """In one transaction: run `statement` (an UPDATE ... RETURNING), insert the
    `run_events` rows `events_of` makes from its rows, commit; return the rows.

    `events_of` runs on aiosqlite's thread, inside the transaction. The caller
    holds the store's write lock: SQLite has one writer.
    """

    def work(db: sqlite3.Connection) -> list[Any]:
        rows = db.execute(statement.text, params).fetchall()
        events = events_of(rows)
        if events:
            db.executemany(INSERT_EVENTS, events)
        return rows

    return await _transaction(conn, statement.text, work)


async def insert_runs(
    conn: AsyncConnection,
    rows: Sequence[tuple[Any, ...]],
    events_of: Callable[[set[str]], Sequence[tuple[Any, ...]]],
    calls: Sequence[tuple[Any, ...]] = (),
    newborn: NewbornInsert | None = None,
) -> set[str]:
    """In one transaction: record `calls` (values in `enqueue_calls.columns`
    order; a request_id already recorded fails the transaction whole), insert
    `rows` (values in `runs.columns` order) into `runs`, skipping any whose
    idempotency key is taken, insert the `run_events` rows `events_of` makes
    for the ids inserted, commit; return those ids. With `newborn`, its
    statement inserts the rows it can.

    Only when some row was skipped (the insert changed fewer rows than it was
    given) does a lookup find which: no job can already hold a new job's id.
    `events_of` runs on aiosqlite's thread, inside the transaction. The caller
    holds the store's write lock: SQLite has one writer.
    """

    statements = [(INSERT_RUNS, rows)] if newborn is None else newborn.statements(rows)

    def work(db: sqlite3.Connection) -> set[str]:
        if calls:
            db.executemany(INSERT_CALLS, calls)
        changed = sum(db.executemany(sql, part).rowcount for sql, part in statements)
        ids = [r[0] for r in rows]
        if changed == len(rows):
            inserted = set(ids)
        else:
            inserted = set()
            for start in range(0, len(ids), _IDS_PER_LOOKUP):
                chunk = ids[start : start + _IDS_PER_LOOKUP]
                marks = ", ".join("?" * len(chunk))
                found = db.execute(f"SELECT id FROM runs WHERE id IN ({marks})", chunk)
                inserted.update(r[0] for r in found)
        events = events_of(inserted)
        if events:
            db.executemany(INSERT_EVENTS, events)
        return inserted

    return await _transaction(conn, INSERT_RUNS, work)
