"""On PostgreSQL the one-statement Lease and Ack (store/sql/pg_bulk.py) read each
of their jobs a bounded number of times, whatever the batch size.

Each job's own values (its token, its result) come in arrays beside its id. Joined
from an `unnest` of them, the planner (which expects one row from `id = ANY(ids)`)
read the whole `unnest` again for every job: n jobs cost n² rows. Measured from
the executed plan (EXPLAIN ANALYZE, rolled back), not from a clock. Real
PostgreSQL (the run's database: each test reads only its own jobs)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import asyncpg
from sqlalchemy import TextClause, text

from dispatcher.domain.ids import JobIdGenerator, new_lease_token
from dispatcher.store.sql import pg_driver
from dispatcher.store.sql.runs import AckHeld, RunStore
from tests.service.helpers import stored_job

NOW = 1_700_000_000_000
JOBS = 60  # in one statement
TABLE = 2_000  # rows in runs, analyzed: the planner then reaches the jobs by primary key
_ids = JobIdGenerator()


async def _queued(store: RunStore) -> list[str]:
    """`JOBS` queued jobs of the `TABLE` in runs, with the table analyzed."""
    jobs = [stored_job(_ids.new(NOW), created_ms=NOW, run_at_ms=NOW) for _ in range(TABLE)]
    async with store.transaction() as tx:
        await tx.insert(jobs)
    async with store.engine.connect() as conn:
        await conn.execute(text("ANALYZE runs"))
        await conn.commit()
    return [j.id for j in jobs[-JOBS:]]


async def _executed_plan(
    store: RunStore, statement: tuple[TextClause, dict[str, Any]]
) -> dict[str, Any]:
    """The plan of `statement` as PostgreSQL ran it, with nothing kept."""
    sql, names = pg_driver.compiled(statement[0])
    async with store.engine.connect() as conn:
        driver = (await conn.get_raw_connection()).driver_connection
        assert isinstance(driver, asyncpg.Connection)
        transaction = driver.transaction()
        await transaction.start()
        try:
            explain = "EXPLAIN (ANALYZE, FORMAT JSON) " + sql
            raw = await driver.fetchval(explain, *[statement[1][n] for n in names])
        finally:
            await transaction.rollback()
    plan: dict[str, Any] = raw[0]["Plan"]  # SQLAlchemy's asyncpg codec decoded the JSON
    return plan


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _most_rows_one_step_read(plan: dict[str, Any]) -> int:
    """The most rows any step of the plan produced, over all its runs."""
    return max(int(n["Actual Rows"] * n["Actual Loops"]) for n in _nodes(plan))


async def test_leasing_n_jobs_in_one_statement_reads_each_of_them_a_bounded_number_of_times(
    pg_runs: RunStore,
) -> None:
    picked = await _queued(pg_runs)
    grants = [(i, new_lease_token(i)) for i in picked]

    plan = await _executed_plan(
        pg_runs, pg_runs.lease_queued_statement("default", grants, "w", NOW, None, "")
    )

    assert plan["Actual Rows"] == JOBS  # every one was leased
    assert _most_rows_one_step_read(plan) <= JOBS


async def test_acking_n_jobs_in_one_statement_reads_each_of_them_a_bounded_number_of_times(
    pg_runs: RunStore,
) -> None:
    picked = await _queued(pg_runs)
    leased = await pg_runs.lease_queued(
        "default", [(i, new_lease_token(i)) for i in picked], "w", NOW, None, ""
    )
    acks = [AckHeld(j.id, j.lease_token, b"done", "text/plain") for j in leased.values()]

    plan = await _executed_plan(pg_runs, pg_runs.ack_held_statement("default", acks, NOW + 1, ""))

    assert plan["Actual Rows"] == JOBS  # every one was acked
    assert _most_rows_one_step_read(plan) <= JOBS
