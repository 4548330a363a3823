"""PostgreSQL's one-statement writes run on asyncpg directly (store/sql/pg_driver.py).

Their errors must mean what they meant through SQLAlchemy, and a connection
the database dropped must be replaced as SQLAlchemy replaces it. Real
PostgreSQL only: the path exists on no other backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

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


@pytest.fixture
async def runs(postgres: PostgresDatabase) -> AsyncIterator[RunStore]:
    store = RunStore(create_engine(postgres.url))
    try:
        yield store
    finally:
        await store.dispose()


async def test_a_statement_that_inserts_returns_the_rows_it_inserted(runs: RunStore) -> None:
    jobs = [new_job(), new_job()]

    assert await runs.insert_committed(jobs) == {j.id for j in jobs}
    assert (await runs.get(jobs[0].id)) == jobs[0]


async def test_a_unique_violation_is_still_a_duplicate_key(runs: RunStore) -> None:
    job = new_job()
    await runs.insert_committed([job])

    with pytest.raises(DuplicateKey):
        await runs.insert_committed([job])  # the same primary key


async def test_after_the_database_drops_every_pooled_connection_only_the_first_statement_fails(
    runs: RunStore, postgres: PostgresDatabase
) -> None:
    # Three statements at once open three pooled connections.
    await asyncio.gather(*(runs.insert_committed([new_job()]) for _ in range(3)))
    assert await postgres.drop_connections() >= 3

    with pytest.raises(Unavailable):
        await runs.insert_committed([new_job()])
    # Had only the broken connection been replaced, the next ones would meet
    # the other two dead connections and fail too.
    for _ in range(3):
        job = new_job()
        assert await runs.insert_committed([job]) == {job.id}
