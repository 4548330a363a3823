"""One pooled connection kept checked out, for writes that come one at a time.

New jobs are inserted by a group commit that runs one commit at a time
(`service.group_commit`), each one statement that commits alone
(`RunStore.insert_committed`). Checking a connection out of SQLAlchemy's pool
and back in for each of them cost about 70 µs of the server's CPU per single
Enqueue (measured on PostgreSQL, 3 rounds of 3,000 sequential Enqueues each
way: 750-783 µs per call with the connection held, 803-867 µs without). So the
connection stays out between statements.

It stays in SQLAlchemy's hands otherwise: it counts against the pool's size,
and a statement that fails for any reason but a constraint violation hands it
back (the pool discards it if it broke; see `pg_driver` for how a dropped
connection is noticed), so the next statement checks out another. A caller
that finds it in use takes a pooled connection as before: callers never wait
for each other here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


class HeldConnection:
    """A connection of `engine`'s pool, checked out on first use and kept."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._conn: AsyncConnection | None = None
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection]:
        """The held connection, or a pooled one while another caller uses it."""
        if self._lock.locked():
            async with self.engine.connect() as conn:
                yield conn
            return
        async with self._lock:
            if self._conn is None:
                self._conn = await self.engine.connect()
            try:
                yield self._conn
            except IntegrityError:  # the database's answer: the connection is fine
                raise
            except BaseException:  # broken, cancelled mid-statement, or unknown: not kept
                await self._release()
                raise

    async def close(self) -> None:
        """Hand the connection back to the pool (before the engine is disposed)."""
        async with self._lock:
            await self._release()

    async def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
