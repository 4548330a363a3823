"""PostgreSQL maintenance (docs/architecture.md): the server says at startup when
PostgreSQL would not vacuum or analyze the job tables by itself
(store/sql/maintenance.py), since without it runs bloats and its query plans go
stale as it grows; its periodic scans of runs are planned afresh each pass, and
no other prepared statement outlives its lifetime (store/sql/engine.py).
Real PostgreSQL, a database of each test's own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from dispatcher.app import DispatcherApp
from dispatcher.config import Settings
from dispatcher.domain.errors import Unavailable
from dispatcher.domain.ids import JobIdGenerator
from dispatcher.domain.models import Job, JobChange
from dispatcher.store.sql.engine import async_url, create_engine
from dispatcher.store.sql.maintenance import autovacuum_gaps
from dispatcher.store.sql.runs import RunStore
from dispatcher.store.sql.tables import runs
from tests.backends import PostgresDatabase, own_postgres
from tests.service.helpers import startup_warnings, stored_job

NOW = 1_700_000_000_000
GROWN_TO = 50_000  # rows: enough that PostgreSQL plans a lookup by id, not a scan
_ids = JobIdGenerator()


@pytest.fixture
def database() -> Iterator[PostgresDatabase]:
    with own_postgres() as db:
        yield db


@pytest.fixture
async def engine(database: PostgresDatabase) -> AsyncIterator[AsyncEngine]:
    e = create_engine(database.url)
    try:
        yield e
    finally:
        await e.dispose()


async def _set(engine: AsyncEngine, statement: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(text(statement))


async def test_a_job_table_with_autovacuum_disabled_is_named(engine: AsyncEngine) -> None:
    await _set(engine, "ALTER TABLE runs SET (autovacuum_enabled = off)")
    gaps = await autovacuum_gaps(engine)
    assert "table runs has autovacuum_enabled = off" in gaps
    assert not any("run_events" in g for g in gaps)

    await _set(engine, "ALTER TABLE runs RESET (autovacuum_enabled)")
    assert not any("table runs" in g for g in await autovacuum_gaps(engine))


async def test_the_servers_own_setting_is_reported_as_the_server_has_it(
    engine: AsyncEngine,
) -> None:
    async with engine.connect() as conn:
        setting = (await conn.execute(text("SHOW autovacuum"))).scalar_one()
    reported = "autovacuum is off in the server's configuration" in await autovacuum_gaps(engine)
    assert reported == (setting == "off")


async def test_sqlite_has_no_autovacuum_to_report(tmp_path: Path) -> None:
    e = create_engine(f"sqlite:///{tmp_path / 'd.db'}")
    try:
        assert await autovacuum_gaps(e) == []
    finally:
        await e.dispose()


async def test_an_unreachable_database_is_unavailable_not_a_crash() -> None:
    e = create_engine("postgresql://postgres@127.0.0.1:1/nowhere")
    try:
        with pytest.raises(Unavailable):
            await autovacuum_gaps(e)
    finally:
        await e.dispose()


async def test_a_server_started_on_such_a_database_says_so_once_in_its_log(
    database: PostgresDatabase, engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    await _set(engine, "ALTER TABLE run_events SET (autovacuum_enabled = false)")
    app = DispatcherApp(Settings(port=0, database_url=database.url, redis_url=""))
    logged = await startup_warnings(app, caplog)
    warnings = [line for line in logged if "VACUUM ANALYZE" in line]
    assert len(warnings) == 1
    assert "table run_events has autovacuum_enabled = false" in warnings[0]


async def _plans(engine: AsyncEngine, marker: str) -> tuple[int, int]:
    """Generic and custom plans used so far by this session's prepared statements
    whose text contains `marker` (the pool holds one connection: the store's)."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
                    " WHERE statement LIKE :marker"
                ),
                {"marker": f"%{marker}%"},
            )
        ).all()
    return sum(r[0] for r in rows), sum(r[1] for r in rows)


@pytest.mark.parametrize(
    ("scan", "marker"),
    [
        (lambda s: s.past_start_deadline(1_700_000_000_000, 500), "start_deadline_at <="),
        (lambda s: s.live_entries("", 1000), "runs.id >"),
        (lambda s: s.finished_before(1_700_000_000_000, 500), "finished_at <"),
    ],
    ids=["reaper deadline sweep", "reconciler page", "retention sweep"],
)
async def test_the_periodic_scans_of_runs_are_planned_for_the_table_as_it_is_now(
    database: PostgresDatabase, scan: Any, marker: str
) -> None:
    # PostgreSQL switches a prepared statement to a generic plan after five runs
    # and keeps it until the table is analyzed: a sequential scan chosen while
    # runs was empty would stay as it grows. These scans run every pass.
    engine = create_async_engine(async_url(database.url), pool_size=1, max_overflow=0)
    store = RunStore(engine)
    try:
        for _ in range(8):
            await scan(store)
        generic, custom = await _plans(engine, marker)
        assert (generic, custom) == (0, 8)
    finally:
        await engine.dispose()


NO_SUCH_JOB = "01NOSUCHJOB0000000000000000"


async def _lease_nothing(store: RunStore) -> None:
    """A hot write (the one-statement Lease, through asyncpg's own cache)."""
    await store.lease_queued("default", [(NO_SUCH_JOB, "t")], "w", 0, None, "")


async def _lock_nothing(store: RunStore) -> None:
    """The first statement of a general write (through SQLAlchemy's adapter)."""
    async with store.transaction() as tx:
        await tx.lock([NO_SUCH_JOB])


@pytest.mark.parametrize(
    ("write", "marker"),
    [(_lease_nothing, "WITH leased AS"), (_lock_nothing, "FOR UPDATE")],
    ids=["hot write", "general write"],
)
async def test_prepared_statements_are_prepared_again_once_their_lifetime_is_over(
    database: PostgresDatabase, write: Callable[[RunStore], Awaitable[None]], marker: str
) -> None:
    # The writes keep cached plans (planning each one costs too much), so their
    # statements are prepared again after a lifetime (30 s in service; 1 s
    # here), and a generic plan made while runs was small does not last. asyncpg
    # prepares its cached statements (the hot writes) again by itself; the ones
    # SQLAlchemy's asyncpg adapter prepares (the general writes: Heartbeat,
    # Nack, Cancel) live as long as their connection, which the pool replaces.
    engine = create_engine(database.url, statement_lifetime_s=1)
    store = RunStore(engine)  # used one call at a time: one pooled connection
    try:
        for _ in range(8):
            await write(store)
        assert (await _plans(engine, marker))[0] > 0  # generic since the sixth run
        await asyncio.sleep(1.5)  # asyncpg's and the pool's own clocks; nothing is timed
        await write(store)
        assert await _plans(engine, marker) == (0, 1)  # a new statement, planned afresh
    finally:
        await store.dispose()


async def _general_write(store: RunStore, jobs: list[Job]) -> int:
    """What Heartbeat, Nack and Cancel do to `runs` (`RunsTx.lock`, then
    `RunsTx.save`), in one transaction; the sequential scans of runs it made."""
    scans = text("SELECT pg_stat_get_xact_numscans('runs'::regclass)")
    async with store.transaction() as tx:
        # The backend's counts not yet reported: they grow within a transaction.
        before = (await tx.conn.execute(scans)).scalar_one()
        locked = await tx.lock([j.id for j in jobs])
        await tx.save(
            [
                JobChange(j, replace(j, progress_percent=j.progress_percent + 1), NOW)
                for j in locked.values()
            ]
        )
        return int((await tx.conn.execute(scans)).scalar_one() - before)


async def _grow_runs(engine: AsyncEngine, rows: int) -> None:
    """Add `rows` copies of a job to runs in one statement (new ids, no key)."""
    columns = ", ".join(f'"{c.name}"' for c in runs.columns)
    values = ", ".join(
        "lpad(g::text, 26, '0')" if c.name == "id"
        else "NULL" if c.name == "idempotency_key"
        else f'r."{c.name}"'
        for c in runs.columns
    )  # fmt: skip
    await _set(
        engine,
        f"INSERT INTO runs ({columns}) SELECT {values}"
        f" FROM (SELECT * FROM runs LIMIT 1) AS r, generate_series(1, {rows}) AS g",
    )


async def test_once_runs_has_grown_a_general_write_no_longer_scans_the_whole_table(
    database: PostgresDatabase,
) -> None:
    # Measured (2026-11-25): planned for a runs table of 120 rows and kept
    # after it grew to 200,000, the lock and the save of 20 jobs took 87-89
    # and 53-84 ms each, against 1.3-1.4 ms planned afresh.
    engine = create_engine(database.url, statement_lifetime_s=1)
    store = RunStore(engine)
    jobs = [stored_job(_ids.new(NOW), created_ms=NOW, run_at_ms=NOW) for _ in range(5)]
    try:
        await _set(engine, "ALTER TABLE runs SET (autovacuum_enabled = off)")  # never analyzed
        await store.insert_committed(jobs)
        for _ in range(8):
            await _general_write(store, jobs)  # planned for a table of 5 rows
        await _grow_runs(engine, GROWN_TO)
        await asyncio.sleep(1.5)  # past the lifetime, by the pool's clock

        assert await _general_write(store, jobs) == 0
    finally:
        await store.dispose()
