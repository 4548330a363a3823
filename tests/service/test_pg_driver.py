"""PostgreSQL's one-statement writes run on asyncpg directly (store/sql/pg_driver.py).

Their errors must mean what they meant through SQLAlchemy, and a connection
the database dropped must be replaced as SQLAlchemy replaces it. Real
PostgreSQL only: the path exists on no other backend."""

from __future__ import annotations

import asyncio

import pytest

from dispatcher.domain.errors import Unavailable
from dispatcher.domain.ids import JobIdGenerator
from dispatcher.domain.models import Job
from dispatcher.store.sql.engine import create_engine
from dispatcher.store.sql.runs import DuplicateKey, RunStore
from tests.backends import PostgresDatabase
from tests.service.helpers import stored_job

NOW = 1_700_000_000_000
_ids = JobIdGenerator()


def new_job() -> Job:
    return stored_job(_ids.new(NOW), queue="pg-driver", created_ms=NOW, run_at_ms=NOW)


async def test_a_statement_that_inserts_returns_the_rows_it_inserted(pg_runs: RunStore) -> None:
    jobs = [new_job(), new_job()]

    assert await pg_runs.insert_committed(jobs) == {j.id for j in jobs}
    assert (await pg_runs.get(jobs[0].id)) == jobs[0]


async def test_a_unique_violation_is_still_a_duplicate_key(pg_runs: RunStore) -> None:
    job = new_job()
    await pg_runs.insert_committed([job])

    with pytest.raises(DuplicateKey):
        await pg_runs.insert_committed([job])  # the same primary key


async def test_after_the_database_drops_every_pooled_connection_only_the_first_statement_fails(
    pg_runs: RunStore, postgres: PostgresDatabase
) -> None:
    # Three statements at once open three pooled connections.
    await asyncio.gather(*(pg_runs.insert_committed([new_job()]) for _ in range(3)))
    assert await postgres.drop_connections() >= 3

    with pytest.raises(Unavailable):
        await pg_runs.insert_committed([new_job()])
    # Had only the broken connection been replaced, the next ones would meet
    # the other two dead connections and fail too.
    for _ in range(3):
        job = new_job()
        assert await pg_runs.insert_committed([job]) == {job.id}


# -- the inserts' held connection (store/sql/held_connection.py) ------------------


async def backend_pid_of_next_insert(pg_runs: RunStore) -> int:
    """The PostgreSQL backend that the next insert_committed would run on (asked
    on asyncpg directly, as the inserts are: through SQLAlchemy the question
    would open a transaction that the next insert then ran in)."""
    async with pg_runs._insert_connection.connection() as conn:
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None
        return int(await driver.fetchval("SELECT pg_backend_pid()"))


async def test_inserts_one_at_a_time_keep_one_connection_out_of_the_pool(pg_runs: RunStore) -> None:
    pool = pg_runs.engine.pool
    for _ in range(3):
        await pg_runs.insert_committed([new_job()])
        assert pool.checkedout() == 1  # type: ignore[attr-defined]
    first = await backend_pid_of_next_insert(pg_runs)
    await pg_runs.insert_committed([new_job()])
    assert await backend_pid_of_next_insert(pg_runs) == first


async def test_an_insert_that_finds_the_held_connection_in_use_takes_a_pooled_one(
    pg_runs: RunStore,
) -> None:
    job = new_job()
    async with pg_runs._insert_connection.connection():
        async with asyncio.timeout(30):  # a hang guard: waiting for the holder would never end
            assert await pg_runs.insert_committed([job]) == {job.id}
    assert (await pg_runs.get(job.id)) == job


async def test_a_duplicate_key_keeps_the_held_connection(pg_runs: RunStore) -> None:
    job = new_job()
    await pg_runs.insert_committed([job])

    with pytest.raises(DuplicateKey):
        await pg_runs.insert_committed([job])
    assert pg_runs.engine.pool.checkedout() == 1  # type: ignore[attr-defined]  # still held


async def test_a_statement_that_fails_otherwise_hands_the_held_connection_back(
    pg_runs: RunStore, postgres: PostgresDatabase
) -> None:
    await pg_runs.insert_committed([new_job()])
    await postgres.drop_connections()

    with pytest.raises(Unavailable):
        await pg_runs.insert_committed([new_job()])
    assert pg_runs.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_disposing_the_store_hands_the_held_connection_back(
    postgres: PostgresDatabase,
) -> None:
    store = RunStore(create_engine(postgres.url))
    await store.insert_committed([new_job()])
    pool = store.engine.pool

    await store.dispose()
    assert pool.checkedout() == 0  # type: ignore[attr-defined]
