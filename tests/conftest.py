"""Shared fixtures. `backend` runs a test once per selected storage backend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from dispatcher.app import Components
from dispatcher.clock import FakeClock
from dispatcher.store.sql.engine import create_engine
from dispatcher.store.sql.runs import RunStore
from tests.backends import (
    REDIS_URL,
    Backend,
    PostgresDatabase,
    embedded,
    own_postgres,
    selected_backends,
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend_name" in metafunc.fixturenames:
        metafunc.parametrize("backend_name", selected_backends())


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresDatabase]:
    """One PostgreSQL database for the whole run, dropped at the end."""
    with own_postgres() as db:
        yield db


@pytest.fixture
async def backend(
    backend_name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Backend]:
    if backend_name == "embedded":
        b = await embedded(tmp_path)
    else:
        pg: PostgresDatabase = request.getfixturevalue("postgres")
        b = Backend("real", pg.url, REDIS_URL)
        await b.truncate_sql()
    try:
        yield b
    finally:
        await b.close()


@pytest.fixture
async def pg_runs(postgres: PostgresDatabase) -> AsyncIterator[RunStore]:
    """The runs store over the run's PostgreSQL database, for tests of its statements."""
    store = RunStore(create_engine(postgres.url))
    try:
        yield store
    finally:
        await store.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def replica(backend: Backend, clock: FakeClock) -> Components:
    """One dispatcher replica (no server), with its index built and serving."""
    c = backend.components(clock)
    await c.reconciler.ensure_index()
    return c
