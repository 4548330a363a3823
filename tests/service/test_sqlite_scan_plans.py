"""The periodic scans of runs on SQLite read what they return, not every live row
(store/sql/unindexed.py).

Without statistics SQLite's planner took the state index for `state IN (...)`:
the reaper's start-deadline check then read every queued job twice a second,
and each reconciler page read and sorted every live job. The plans are checked
(EXPLAIN QUERY PLAN), not timed. SQLite only: PostgreSQL plans from the
statistics autovacuum keeps, and these statements run unchanged there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Select, text
from sqlalchemy.dialects import sqlite

from dispatcher.store.sql.engine import create_engine
from dispatcher.store.sql.migrate import upgrade_async
from dispatcher.store.sql.runs import (
    RunStore,
    live_entries_statement,
    past_start_deadline_statement,
)
from tests.service.helpers import PRIMARY_KEY_INDEX


@pytest.fixture
async def runs(tmp_path: Path) -> AsyncIterator[RunStore]:
    url = f"sqlite:///{tmp_path / 'dispatcher.db'}"
    await upgrade_async(url)
    store = RunStore(create_engine(url))
    try:
        yield store
    finally:
        await store.dispose()


async def _plan(runs: RunStore, statement: Select[object]) -> str:
    sql = statement.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True})
    async with runs.engine.connect() as conn:
        rows = (await conn.execute(text(f"EXPLAIN QUERY PLAN {sql}"))).all()
    return "\n".join(str(row[-1]) for row in rows)


async def test_the_start_deadline_check_reads_only_jobs_that_have_a_deadline(
    runs: RunStore,
) -> None:
    plan = await _plan(runs, past_start_deadline_statement(1_700_000_000_000, 100))

    assert "ix_runs_start_deadline" in plan
    assert "ix_runs_state_queue" not in plan


async def test_a_reconciler_page_walks_the_primary_key_from_its_cursor_without_sorting(
    runs: RunStore,
) -> None:
    plan = await _plan(runs, live_entries_statement("01J0000000000000000000000A", 1000))

    assert PRIMARY_KEY_INDEX["sqlite"] in plan
    assert "ix_runs_state_queue" not in plan
    assert "TEMP B-TREE" not in plan  # no sort of every live row
