"""SQLite's plain Lease and Ack, run on the pooled aiosqlite connection itself.

aiosqlite runs every call on its own thread, so each call is a hop there and
back. Through SQLAlchemy's aiosqlite adapter one statement is several hops (a
cursor, the execute, the fetch, the close) besides SQLAlchemy's own work per
statement: a lease of one job took 4.0-6.2 ms that way and 2.6 ms here, one of
50 jobs 7.9-9.4 ms and 4.8-5.3 ms (2-core machine, in-process). A shorter
write transaction also holds SQLite's single writer for less time. Here the
transaction is four hops, with aiosqlite's public API: BEGIN IMMEDIATE, the
UPDATE ... RETURNING and its rows, the insert of the events made from them,
COMMIT.

The statements are `sqlite_bulk`'s: their `:name` placeholders are sqlite3's
named style, so they run as written. The connection comes from SQLAlchemy's
pool and goes back to it. SQLAlchemy never began a transaction on it, so it
may not roll one back on return: every way out of here that does not commit
rolls back first. Errors leave as SQLAlchemy's, for `runs.translate_errors`
to map: a constraint violation as `IntegrityError`, anything else from the
driver as `DBAPIError`.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

import aiosqlite
from sqlalchemy import TextClause
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from dispatcher.store.sql.tables import run_events

_EVENT_COLUMNS = [c.name for c in run_events.c]
INSERT_EVENTS = (
    f"INSERT INTO run_events ({', '.join(_EVENT_COLUMNS)})"
    f" VALUES ({', '.join(':' + c for c in _EVENT_COLUMNS)})"
)


async def update_returning(
    conn: AsyncConnection,
    statement: TextClause,
    params: dict[str, Any],
    events_of: Callable[[Sequence[Any]], Sequence[dict[str, Any]]],
) -> Sequence[Any]:
    """In one transaction: run `statement` (an UPDATE ... RETURNING), insert the
    `run_events` rows `events_of` makes from its rows, commit; return the rows.

    The caller holds the store's write lock: SQLite has one writer.
    """
    driver = (await conn.get_raw_connection()).driver_connection
    assert isinstance(driver, aiosqlite.Connection)
    committed = False
    try:
        await driver.execute_fetchall("BEGIN IMMEDIATE")
        rows = list(await driver.execute_fetchall(statement.text, params))
        events = events_of(rows)
        if events:
            # The cursor is left to the garbage collector: closing it is one
            # more hop, and a finished INSERT's cursor holds no lock.
            await driver.executemany(INSERT_EVENTS, events)
        await driver.execute_fetchall("COMMIT")
        committed = True
        return rows
    except sqlite3.IntegrityError as exc:
        raise IntegrityError(statement.text, None, exc) from exc
    except sqlite3.Error as exc:
        raise DBAPIError(statement.text, None, exc) from exc
    finally:
        if not committed:
            # Also after a cancel: aiosqlite runs calls in order, so this comes
            # after whatever was already handed to its thread.
            with contextlib.suppress(sqlite3.Error):  # none open: nothing to undo
                await driver.execute_fetchall("ROLLBACK")
