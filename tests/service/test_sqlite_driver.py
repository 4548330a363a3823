"""SQLite's plain Enqueue insert, Lease and Ack run on aiosqlite directly
(store/sql/sqlite_driver.py).

They commit what they return, roll back everything else on any failure, and
never leave a transaction open on a pooled connection: SQLite has one writer,
so a forgotten transaction would stop every later write. SQLite only: the path
exists on no other backend (the embedded backend's other tests run it too).
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import TextClause

from dispatcher.domain.ids import JobIdGenerator, new_lease_token
from dispatcher.domain.models import Job, JobState
from dispatcher.store.sql import sqlite_driver
from dispatcher.store.sql.engine import create_engine
from dispatcher.store.sql.migrate import upgrade_async
from dispatcher.store.sql.runs import (
    AckHeld,
    DuplicateKey,
    RunStore,
    job_values,
)
from tests.service.helpers import stored_job

NOW = 1_700_000_000_000
_ids = JobIdGenerator()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[tuple[RunStore, Path]]:
    path = tmp_path / "dispatcher.db"
    url = f"sqlite:///{path}"
    await upgrade_async(url)
    store = RunStore(create_engine(url))
    try:
        yield store, path
    finally:
        await store.dispose()


async def _queued(runs: RunStore) -> Job:
    job = stored_job(_ids.new(NOW), queue="q", created_ms=NOW, run_at_ms=NOW)
    async with runs.transaction() as tx:
        await tx.insert([job])
    return job


def _seen_elsewhere(path: Path, job_id: str) -> tuple[Any, list[Any]]:
    """The job's state (None: no row) and events as another connection sees them
    (committed only)."""
    other = sqlite3.connect(path)
    try:
        row = other.execute("SELECT state FROM runs WHERE id = ?", (job_id,)).fetchone()
        state = None if row is None else row[0]
        events = other.execute(
            "SELECT version, state FROM run_events WHERE job_id = ? ORDER BY version", (job_id,)
        ).fetchall()
        return state, events
    finally:
        other.close()


async def test_a_lease_and_an_ack_are_committed_with_their_events(
    db: tuple[RunStore, Path],
) -> None:
    runs, path = db
    job = await _queued(runs)
    token = new_lease_token(job.id)
    leased = await runs.lease_queued("default", [(job.id, token)], "w", NOW, None, "")
    # Version 1, QUEUED at creation, is implied by the row (`tables.FIRST_EVENT_IMPLIED`).
    assert _seen_elsewhere(path, job.id) == ("leased", [(2, "leased")])
    acked = await runs.ack_held(
        "default", [AckHeld(job.id, token, b"ok", "text/plain")], NOW + 1, ""
    )
    assert (leased[job.id].state, acked[job.id].state) == (JobState.LEASED, JobState.SUCCEEDED)
    assert _seen_elsewhere(path, job.id) == ("succeeded", [(2, "leased"), (3, "succeeded")])


async def test_a_failed_events_insert_undoes_the_update_and_frees_the_writer(
    db: tuple[RunStore, Path],
) -> None:
    runs, path = db
    job = await _queued(runs)
    # An event already holding the version the lease will write makes its insert collide.
    other = sqlite3.connect(path)
    other.execute(
        "INSERT INTO run_events (job_id, version, state, attempt, at, error)"
        " VALUES (?, 2, 'leased', 1, 0, '')",
        (job.id,),
    )
    other.commit()
    with pytest.raises(DuplicateKey):
        await runs.lease_queued("default", [(job.id, new_lease_token(job.id))], "w", NOW, None, "")
    assert _seen_elsewhere(path, job.id)[0] == "queued"
    other.execute("DELETE FROM run_events WHERE job_id = ? AND version = 2", (job.id,))
    other.commit()  # would wait out the busy timeout if a transaction were left open
    other.close()
    leased = await runs.lease_queued(
        "default", [(job.id, new_lease_token(job.id))], "w", NOW, None, ""
    )
    assert leased[job.id].state is JobState.LEASED


async def test_an_error_between_the_statements_rolls_back(db: tuple[RunStore, Path]) -> None:
    runs, path = db
    job = await _queued(runs)
    statement, params = runs.lease_queued_statement(
        "default", [(job.id, new_lease_token(job.id))], "w", NOW, None, ""
    )
    assert isinstance(statement, TextClause)

    def events_of(rows: Sequence[Any]) -> list[tuple[Any, ...]]:
        raise RuntimeError("the caller failed after the UPDATE")

    async with runs.engine.connect() as conn:
        with pytest.raises(RuntimeError):
            await sqlite_driver.update_returning(conn, statement, params, events_of)
        # The pooled connection has no transaction left open.
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None and not raw.in_transaction
    assert _seen_elsewhere(path, job.id) == ("queued", [])  # no lease, no event of it


def _new(key: str | None = None) -> Job:
    return stored_job(_ids.new(NOW), queue="q", created_ms=NOW, run_at_ms=NOW, idempotency_key=key)


def _scheduled() -> Job:
    return dataclasses.replace(_new(), state=JobState.SCHEDULED, run_at_ms=NOW + 60_000)


async def test_new_jobs_are_committed_with_their_first_events(db: tuple[RunStore, Path]) -> None:
    runs, path = db
    queued, scheduled = _new(), _scheduled()
    assert await runs.insert_committed([queued, scheduled]) == {queued.id, scheduled.id}
    # A job born QUEUED has no row for its version 1: its own row implies it.
    assert _seen_elsewhere(path, queued.id) == ("queued", [])
    assert _seen_elsewhere(path, scheduled.id) == ("scheduled", [(1, "scheduled")])
    for j in (queued, scheduled):
        assert await runs.get(j.id) == j


async def test_a_first_event_holds_each_of_its_columns(db: tuple[RunStore, Path]) -> None:
    runs, path = db
    job = dataclasses.replace(_scheduled(), created_ms=NOW - 7)  # every column a distinct value
    await runs.insert_committed([job])
    other = sqlite3.connect(path)
    try:
        cursor = other.execute("SELECT * FROM run_events WHERE job_id = ?", (job.id,))
        (row,) = [dict(zip([d[0] for d in cursor.description], r, strict=True)) for r in cursor]
    finally:
        other.close()
    expected = {"version": 1, "state": "scheduled", "attempt": 0, "at": NOW - 7, "error": ""}
    assert row == {"job_id": job.id, **expected}


async def test_a_job_whose_key_is_taken_is_skipped_and_gets_no_event(
    db: tuple[RunStore, Path],
) -> None:
    runs, path = db
    holder = _new("taken")
    await runs.insert_committed([holder])
    fresh, clash = _new("fresh"), _new("taken")

    assert await runs.insert_committed([fresh, clash]) == {fresh.id}

    assert await runs.get(clash.id) is None
    assert _seen_elsewhere(path, clash.id) == (None, [])  # no row, no event


async def test_a_failed_insert_leaves_nothing_and_no_open_transaction(
    db: tuple[RunStore, Path],
) -> None:
    runs, _ = db
    job = _new()

    def events_of(ids: set[str]) -> list[tuple[Any, ...]]:
        raise RuntimeError("the caller failed after the INSERT")

    async with runs.engine.connect() as conn:
        with pytest.raises(RuntimeError):
            await sqlite_driver.insert_runs(conn, [job_values(job)], events_of)
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None and not raw.in_transaction
    assert await runs.get(job.id) is None


async def test_a_transaction_whose_caller_is_cancelled_still_ends_on_the_thread(
    db: tuple[RunStore, Path],
) -> None:
    """The whole transaction is one call on aiosqlite's thread: a cancel does not
    cut it in two. It commits, as a cancel during COMMIT always could, and leaves
    no transaction open."""
    runs, path = db
    job = _new()
    in_transaction, go_on = threading.Event(), threading.Event()

    def events_of(ids: set[str]) -> list[tuple[Any, ...]]:
        in_transaction.set()
        go_on.wait(10)
        return []

    async with runs.engine.connect() as conn:
        write = asyncio.create_task(sqlite_driver.insert_runs(conn, [job_values(job)], events_of))
        assert await asyncio.to_thread(in_transaction.wait, 10)
        write.cancel()
        go_on.set()
        with pytest.raises(asyncio.CancelledError):
            await write
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        # The connection's next call runs after the transaction, on the same thread.
        await raw.execute_fetchall("SELECT 1")
        assert not raw.in_transaction
    assert _seen_elsewhere(path, job.id) == ("queued", [])  # committed, without events
    later = _new()
    assert await runs.insert_committed([later]) == {later.id}


async def test_of_two_new_jobs_with_one_key_the_first_is_inserted_whichever_statement_it_takes(
    db: tuple[RunStore, Path],
) -> None:
    runs, _ = db
    for plain_first in (True, False):
        key = f"key-{plain_first}"
        plain = _new(key)
        with_callback = dataclasses.replace(_new(key), callback_url="https://example.test/hook")
        pair = (plain, with_callback) if plain_first else (with_callback, plain)

        assert await runs.insert_committed(pair) == {pair[0].id}
        assert await runs.get(pair[1].id) is None
