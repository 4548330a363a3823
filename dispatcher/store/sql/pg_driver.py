"""PostgreSQL's one-statement writes, run on the pooled asyncpg connection itself.

The hot writes (insert new jobs, lease, ack) are each one statement that
commits alone. Through SQLAlchemy's `Connection.execute` such a statement cost
about 290 µs more CPU than the same statement on asyncpg (measured: 486 against
190 µs for a one-job insert, 2-core machine), which is a sixth of a single
Enqueue's server time: SQLAlchemy builds an execution context, binds the 40
parameters by name and adapts the result, and its asyncpg adapter re-reads the
prepared statement's attributes, for rows we read by position anyway. Here the
statement is compiled once for asyncpg (`$n` placeholders, in `positiontup`
order) and run with asyncpg's `fetch`, which prepares it once per connection.

The connection still comes from SQLAlchemy's pool and goes back to it, so the
pool's size, timeouts and reset on return apply as before. asyncpg runs a
statement outside a transaction as its own transaction, as AUTOCOMMIT did.

Failures keep their meaning. A broken connection is closed and handed to
SQLAlchemy: one statement through it makes SQLAlchemy see the disconnect and
do what it does for every other statement, invalidate the connection and
every pooled one opened before it (no pre-ping: see engine.py), so only the
first call after the database dropped its connections fails. Errors leave as
SQLAlchemy's, for `runs.translate_errors` to map: a unique violation as
`IntegrityError`, anything else as a `DBAPIError`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import asyncpg
from sqlalchemy import TextClause
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

_DIALECT = asyncpg_dialect()  # type: ignore[no-untyped-call]


@functools.lru_cache(maxsize=64)
def compiled(statement: TextClause) -> tuple[str, tuple[str, ...]]:
    """The statement's SQL for asyncpg and its parameter names in `$n` order
    (a name used twice is one parameter)."""
    c = statement.compile(dialect=_DIALECT)
    return str(c), tuple(c.positiontup or ())


async def fetch(
    conn: AsyncConnection, statement: TextClause, params: dict[str, Any]
) -> Sequence[Any]:
    """Run `statement` with `params` on `conn`'s asyncpg connection; its rows."""
    sql, names = compiled(statement)
    driver = (await conn.get_raw_connection()).driver_connection
    assert isinstance(driver, asyncpg.Connection)
    try:
        rows: Sequence[Any] = await driver.fetch(sql, *[params[n] for n in names])
        return rows
    except asyncpg.IntegrityConstraintViolationError as exc:
        raise IntegrityError(sql, None, exc) from exc
    except asyncpg.PostgresError as exc:  # the server's answer, or its goodbye
        if driver.is_closed():
            await _let_sqlalchemy_see_the_disconnect(conn)
        raise DBAPIError(sql, None, exc) from exc
    except (asyncpg.InterfaceError, asyncpg.InternalClientError, OSError, TimeoutError) as exc:
        # The connection can no longer be trusted. A server that terminated it
        # while it sat in the pool can leave asyncpg mid-way through reading that
        # error, not yet closed (InternalClientError: "another operation is in
        # progress"): close it, so that SQLAlchemy counts it as a disconnect.
        driver.terminate()
        await _let_sqlalchemy_see_the_disconnect(conn)
        raise DBAPIError(sql, None, exc) from exc


async def _let_sqlalchemy_see_the_disconnect(conn: AsyncConnection) -> None:
    """Run a statement through SQLAlchemy on the closed connection: it fails,
    and SQLAlchemy invalidates the pool as for any disconnect."""
    try:
        await conn.exec_driver_sql("SELECT 1")
    except DBAPIError:
        pass
