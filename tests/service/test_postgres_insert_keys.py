"""On PostgreSQL a committed insert of new jobs first runs as if every
idempotency key were free (`pg_bulk.INSERT_NEW_JOBS`, no ON CONFLICT, which
costs each keyed row an extra look into the unique index). A taken key fails
that statement whole and the statement that skips taken keys runs instead;
after that, it runs from the start for the next `KEY_TAKEN_HOLD` inserts.
The jobs written must be the same either way.

Real PostgreSQL (the run's database: each test uses its own ids and keys). The
statements are seen through a spy that passes each one on to the driver."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import TextClause
from sqlalchemy.ext.asyncio import AsyncConnection

from dispatcher.domain.ids import JobIdGenerator
from dispatcher.domain.models import Job, JobState, Transition
from dispatcher.store.sql import pg_bulk, pg_driver, runs
from dispatcher.store.sql.runs import DuplicateKey, RunStore
from tests.service.helpers import stored_job

NOW = 1_700_000_000_000
_ids = JobIdGenerator()


def _keyed(key: str | None = None) -> Job:
    return stored_job(
        _ids.new(NOW), created_ms=NOW, run_at_ms=NOW, idempotency_key=key or uuid.uuid4().hex
    )


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of each insert statement the store runs, in order ("new" or "skipping")."""
    both = (pg_bulk.INSERTS, runs._PG_NEWBORN_INSERTS)  # for all rows, or newborn jobs' only
    names = {id(i.new_jobs): "new" for i in both} | {id(i.all_jobs): "skipping" for i in both}
    seen: list[str] = []
    real = pg_driver.fetch

    async def spy(
        conn: AsyncConnection, statement: TextClause, params: dict[str, Any]
    ) -> Sequence[Any]:
        if id(statement) in names:
            seen.append(names[id(statement)])
        return await real(conn, statement, params)

    monkeypatch.setattr(pg_driver, "fetch", spy)
    return seen


async def test_jobs_with_free_keys_are_inserted_by_the_statement_that_does_not_look_for_taken_ones(
    pg_runs: RunStore, statements: list[str]
) -> None:
    jobs = [_keyed() for _ in range(3)]

    inserted = await pg_runs.insert_committed(jobs)

    assert inserted == {j.id for j in jobs}
    assert statements == ["new"]
    for j in jobs:
        assert await pg_runs.get(j.id) == j


async def test_a_taken_key_fails_the_first_statement_whole_and_the_skipping_one_inserts_the_rest(
    pg_runs: RunStore, statements: list[str]
) -> None:
    holder = _keyed()
    await pg_runs.insert_committed([holder])
    fresh, clash = _keyed(), _keyed(holder.idempotency_key)

    inserted = await pg_runs.insert_committed([fresh, clash])

    assert inserted == {fresh.id}
    assert statements == ["new", "new", "skipping"]
    assert await pg_runs.get(clash.id) is None
    assert await pg_runs.get(fresh.id) == fresh
    # The failed statement wrote nothing: one first event, from the second.
    assert await pg_runs.events_after({fresh.id: 0}) == [
        Transition(fresh.id, 1, JobState.QUEUED, 0, NOW, "")
    ]


async def test_after_a_taken_key_the_next_inserts_skip_taken_keys_from_the_start_for_a_while(
    pg_runs: RunStore, statements: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runs, "KEY_TAKEN_HOLD", 2)
    holder = _keyed()
    await pg_runs.insert_committed([holder])
    await pg_runs.insert_committed([_keyed(holder.idempotency_key)])  # taken: the hold starts
    del statements[:]

    for _ in range(3):
        await pg_runs.insert_committed([_keyed()])
    assert statements == ["skipping", "skipping", "new"]

    # A taken key within the hold costs no failed statement.
    await pg_runs.insert_committed([_keyed(holder.idempotency_key)])
    assert statements[-2:] == ["new", "skipping"]
    await pg_runs.insert_committed([_keyed(holder.idempotency_key)])
    assert statements[-1:] == ["skipping"]


async def test_a_taken_job_id_is_a_duplicate_key_and_no_second_statement_runs(
    pg_runs: RunStore, statements: list[str]
) -> None:
    job = _keyed()
    await pg_runs.insert_committed([job])
    same_id = stored_job(job.id, created_ms=NOW, run_at_ms=NOW, idempotency_key="another")

    with pytest.raises(DuplicateKey):
        await pg_runs.insert_committed([same_id])

    assert statements == ["new", "new"]
