"""Test backends: the embedded default (SQLite + fakeredis) and real Redis + PostgreSQL.

Every test run gets its own PostgreSQL database (created at session start,
dropped at the end) and every test its own Redis key prefix, so runs never
collide with each other or with other data on the same servers. Real servers
that do not answer fail the run: they are never skipped silently.

Environment:
    DISPATCHER_TEST_BACKENDS   comma list of "embedded", "real" (default both)
    DISPATCHER_TEST_REDIS_URL  default redis://127.0.0.1:6379/0
    DISPATCHER_TEST_PG_URL     admin URL, default postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import fakeredis
import redis.asyncio as redis_asyncio
from sqlalchemy.engine import make_url

from dispatcher.app import Components
from dispatcher.clock import Clock
from dispatcher.store.redis.index import RedisIndex
from dispatcher.store.redis.keys import Keys
from dispatcher.store.sql.engine import create_engine
from dispatcher.store.sql.migrate import upgrade, upgrade_async
from dispatcher.store.sql.runs import RunStore
from dispatcher.store.sql.tables import metadata

REDIS_URL = os.environ.get("DISPATCHER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
FINISH_WRITES_WITHIN_S = 5.0  # at teardown (`Backend.close`)
PG_ADMIN_URL = os.environ.get(
    "DISPATCHER_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def selected_backends() -> list[str]:
    raw = os.environ.get("DISPATCHER_TEST_BACKENDS", "embedded,real")
    names = [b.strip() for b in raw.split(",") if b.strip()]
    unknown = set(names) - {"embedded", "real"}
    if unknown or not names:
        raise RuntimeError(f"DISPATCHER_TEST_BACKENDS: unknown {sorted(unknown)}")
    return names


class PostgresDatabase:
    """A throwaway database on the test PostgreSQL server."""

    def __init__(self) -> None:
        self.name = f"dispatcher_test_{uuid.uuid4().hex[:12]}"
        admin = make_url(PG_ADMIN_URL)
        self.url = admin.set(database=self.name).render_as_string(hide_password=False)

    def create(self, revision: str | None = "heads") -> None:
        """Create the database and migrate it to `revision` (None: leave it empty)."""
        _in_thread(_admin_execute, f'CREATE DATABASE "{self.name}"')
        if revision is not None:
            _in_thread(upgrade, self.url, revision)

    def drop(self) -> None:
        _in_thread(_admin_execute, f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    async def drop_connections(self) -> int:
        """Terminate every connection to this database (as a restart would);
        return how many there were."""
        admin = await pg_connect(PG_ADMIN_URL)
        try:
            return int(
                await admin.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = $1 AND pid <> pg_backend_pid()",
                    self.name,
                )
            )
        finally:
            await admin.close()


@contextmanager
def own_postgres(revision: str | None = "heads") -> Iterator[PostgresDatabase]:
    """A database of the caller's own, migrated to `revision`, dropped afterwards."""
    db = PostgresDatabase()
    db.create(revision=revision)
    try:
        yield db
    finally:
        db.drop()


def _in_thread(fn: Any, *args: Any) -> None:
    """Run blocking setup that owns its own event loop, even from inside a running one."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(fn, *args).result()


async def pg_connect(url: str) -> Any:
    """An asyncpg connection to the database a SQLAlchemy-style URL names."""
    u = make_url(url)
    return await asyncpg.connect(
        host=u.host,
        port=u.port or 5432,
        user=u.username,
        password=u.password,
        database=u.database,
        timeout=5,
    )


def _admin_execute(sql: str) -> None:
    """Run one statement on the admin database (asyncpg, in its own event loop)."""

    async def run() -> None:
        conn = await pg_connect(PG_ADMIN_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


@dataclass
class Backend:
    """One storage setup; `components()` builds a replica on it."""

    name: str
    database_url: str
    redis_url: str  # "" for the in-process emulation
    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:10]}")
    fake_server: Any = None
    _opened: list[Components] = field(default_factory=list)

    def redis_client(self) -> Any:
        if self.redis_url:
            return redis_asyncio.from_url(self.redis_url, decode_responses=True)
        return fakeredis.FakeAsyncRedis(server=self.fake_server, decode_responses=True)

    def components(self, clock: Clock) -> Components:
        c = Components(
            runs=RunStore(create_engine(self.database_url)),
            index=RedisIndex(self.redis_client(), Keys(self.prefix)),
            clock=clock,
        )
        self._opened.append(c)
        return c

    async def wipe_redis(self) -> None:
        """Delete every key of this test (FLUSHALL, limited to our prefix on a shared server)."""
        client = self.redis_client()
        try:
            async for key in client.scan_iter(match=f"{self.prefix}:*", count=1000):
                await client.delete(key)
        finally:
            await client.aclose()

    async def close(self) -> None:
        for c in self._opened:
            # A write still in flight after the test would open a connection of
            # its own once the client is closed, left for the collector to warn
            # about in a later test. A test that leaves a write held gives up
            # waiting after a while, as before.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FINISH_WRITES_WITHIN_S):
                    await c.finish_writes()
            await c.runs.dispose()
            await c.index.client.aclose()
        await self.wipe_redis()

    async def truncate_sql(self) -> None:
        engine = create_engine(self.database_url)
        try:
            async with engine.begin() as conn:
                for table in reversed(metadata.sorted_tables):
                    await conn.execute(table.delete())
        finally:
            await engine.dispose()


async def embedded(tmp_path: Path) -> Backend:
    url = f"sqlite:///{tmp_path / 'dispatcher.db'}"
    await upgrade_async(url)
    return Backend("embedded", url, "", fake_server=fakeredis.FakeServer())
