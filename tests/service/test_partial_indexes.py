"""Migration 0010 makes four indexes of runs partial (see the migration's docstring).

An existing database must keep every row, an idempotency key must stay unique
in its namespace, and going back to 0009 must restore the plain constraint.
Runs on a database of its own on each backend (SQLite, PostgreSQL)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from alembic import command
from sqlalchemy import select, text

from dispatcher.domain.models import Job, JobState, TerminalReason
from dispatcher.store.sql.engine import create_engine
from dispatcher.store.sql.migrate import alembic_config, upgrade
from dispatcher.store.sql.runs import job_to_row
from dispatcher.store.sql.tables import runs
from tests.backends import own_postgres
from tests.service.helpers import stored_job

T = TypeVar("T")

PARTIAL = {
    "uq_runs_idempotency": "idempotency_key",
    "ix_runs_finished": "finished_at",
    "ix_runs_finished_at": "finished_at",
    "ix_runs_start_deadline": "start_deadline_at",
}


@pytest.fixture
def blank_url(backend_name: str, tmp_path: Path) -> Iterator[str]:
    """An empty database: no tables, not even Alembic's."""
    if backend_name == "embedded":
        yield f"sqlite:///{tmp_path / 'blank.db'}"
        return
    with own_postgres(revision=None) as db:
        yield db.url


def _job(n: int, **kw: Any) -> Job:
    return stored_job(f"01JOB{n:021d}", **kw)


EXISTING = [
    _job(1, idempotency_key="k1"),
    _job(
        2,
        state=JobState.SUCCEEDED,
        attempt=1,
        started_ms=2_000,
        finished_ms=3_000,
        terminal_reason=TerminalReason.SUCCEEDED,
    ),
    _job(3, start_deadline_ms=60_000),
    _job(4),
]


def _run(url: str, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run `work(conn)` in a transaction on a fresh engine; return its result."""

    async def go() -> T:
        engine = create_engine(url)
        try:
            async with engine.begin() as conn:
                return await work(conn)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def _rows(url: str) -> list[dict[str, Any]]:
    async def work(conn: Any) -> list[dict[str, Any]]:
        result = await conn.execute(select(runs).order_by(runs.c.id))
        return [dict(r._mapping) for r in result]

    return _run(url, work)


def _insert(url: str, jobs: list[Job]) -> None:
    async def work(conn: Any) -> None:
        await conn.execute(runs.insert(), [job_to_row(j) for j in jobs])

    _run(url, work)


def _index_definitions(url: str) -> dict[str, str]:
    """Each index of runs (primary key aside) and the SQL that defines it."""

    async def work(conn: Any) -> dict[str, str]:
        if conn.dialect.name == "postgresql":
            query = "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'runs'"
        else:
            query = "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'runs'"
        rows = (await conn.execute(text(query))).all()
        return {name: sql or "" for name, sql in rows if name != "runs_pkey" and sql}

    return _run(url, work)


def _duplicate_key_refused(url: str) -> bool:
    try:
        _insert(url, [_job(9, idempotency_key="k1")])
    except Exception as exc:  # the driver's IntegrityError, wrapped by SQLAlchemy
        return "unique" in str(exc).lower()
    return False


def test_upgrading_keeps_every_row_and_makes_four_indexes_partial(blank_url: str) -> None:
    upgrade(blank_url, "0009")
    _insert(blank_url, EXISTING)
    before = _rows(blank_url)

    upgrade(blank_url, "heads")

    assert _rows(blank_url) == before
    definitions = _index_definitions(blank_url)
    for name, column in PARTIAL.items():
        assert re.search(rf"WHERE \(?{column} IS NOT NULL", definitions[name]), definitions[name]
    assert "WHERE" not in definitions["ix_runs_state_queue"]
    assert "UNIQUE" in definitions["uq_runs_idempotency"]


def test_after_upgrading_a_key_is_still_unique_and_jobs_without_one_never_collide(
    blank_url: str,
) -> None:
    upgrade(blank_url, "heads")
    _insert(blank_url, EXISTING)

    _insert(blank_url, [_job(5), _job(6), _job(7, namespace="other", idempotency_key="k1")])

    assert _duplicate_key_refused(blank_url)
    assert len(_rows(blank_url)) == 7


def test_downgrading_to_0009_restores_the_plain_indexes_and_the_constraint(
    blank_url: str,
) -> None:
    upgrade(blank_url, "heads")
    _insert(blank_url, EXISTING)
    before = _rows(blank_url)

    command.downgrade(alembic_config(blank_url), "0009")

    assert _rows(blank_url) == before
    definitions = _index_definitions(blank_url)
    for name in ("ix_runs_finished", "ix_runs_finished_at", "ix_runs_start_deadline"):
        assert "WHERE" not in definitions[name]
    assert "WHERE" not in definitions.get("uq_runs_idempotency", "")  # SQLite: unnamed
    assert _duplicate_key_refused(blank_url)
