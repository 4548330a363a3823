"""Small builders shared by the service tests."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from sqlalchemy import TextClause, text

from dispatcher.app import Components, DispatcherApp
from dispatcher.clock import Clock
from dispatcher.domain.models import (
    AckItem,
    GrantedLease,
    Job,
    JobSpec,
    JobState,
    LeaseRequest,
    NackItem,
    Priority,
    RetryPolicy,
)
from dispatcher.store.redis.index import RedisIndex
from tests.backends import Backend


def stored_job(job_id: str, **kw: Any) -> Job:
    """A QUEUED job as a row of the runs table holds it, for tests that write
    rows directly; `kw` overrides any field."""
    fields: dict[str, Any] = dict(
        id=job_id,
        namespace="default",
        queue="q",
        type="t",
        payload=b"{}",
        content_type="application/json",
        priority=Priority.DEFAULT,
        metadata={},
        state=JobState.QUEUED,
        attempt=0,
        max_attempts=3,
        retry_policy=RetryPolicy(),
        lease_duration_ms=30_000,
        created_ms=1_000,
        run_at_ms=1_000,
    )
    return Job(**(fields | kw))


def spec(queue: str = "q", **kw: object) -> JobSpec:
    kw.setdefault("type", "t")
    return JobSpec(queue=queue, **kw)  # type: ignore[arg-type]


async def lease(
    c: Components,
    queues: list[str] | None = None,
    n: int = 1,
    worker: str = "w",
    wait_ms: int = 0,
    duration_ms: int | None = None,
) -> list[GrantedLease]:
    return await c.dispatcher.lease(
        LeaseRequest("", worker, queues or ["q"], n, wait_ms, duration_ms)
    )


async def startup_warnings(app: DispatcherApp, caplog: pytest.LogCaptureFixture) -> list[str]:
    """Start the app, wait until it serves, stop it: the warnings `dispatcher.app` logged."""
    with caplog.at_level(logging.WARNING, logger="dispatcher.app"):
        await app.start()
        try:
            await app.wait_serving()
        finally:
            await app.stop()
    return [r.getMessage() for r in caplog.records if r.name == "dispatcher.app"]


async def two_replicas(backend: Backend, clock: Clock) -> tuple[Components, Components]:
    """Two dispatcher replicas on the same storage, each with its index built."""
    a, b = backend.components(clock), backend.components(clock)
    await a.reconciler.ensure_index()
    await b.reconciler.ensure_index()
    return a, b


async def parked(c: Components, waiters: int = 1) -> None:
    """Return once `waiters` long-polls have looked, found nothing and wait."""
    while sum(w.idle for ws in c.waiters._by_queue.values() for w in ws) < waiters:
        await asyncio.sleep(0.005)


def record_lease_scripts(index: RedisIndex) -> list[str]:
    """The queue of every lease script the index runs from now on, in order."""
    looked_at: list[str] = []
    real_lease = index.lease

    async def recorded_lease(ns: str, queue: str, *args: Any) -> Any:
        looked_at.append(queue)
        return await real_lease(ns, queue, *args)

    index.lease = recorded_lease  # type: ignore[method-assign,assignment]
    return looked_at


async def ack(c: Components, token: str, result: bytes = b"") -> None:
    await c.dispatcher.ack("", [AckItem(token, result)])


async def nack(
    c: Components,
    token: str,
    error: str = "boom",
    retry: bool = True,
    retry_after_ms: int | None = None,
    release: bool = False,
) -> None:
    await c.dispatcher.nack("", [NackItem(token, error, retry, retry_after_ms, release)])


# The index a lookup by job id uses, by dialect.
PRIMARY_KEY_INDEX = {"postgresql": "runs_pkey", "sqlite": "sqlite_autoindex_runs_1"}


async def query_plan(c: Components, statement: TextClause, params: dict[str, Any]) -> str:
    """How the database would run a statement (EXPLAIN, not run), as text."""
    sqlite = c.runs.engine.dialect.name == "sqlite"
    explain = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN "
    async with c.runs.engine.begin() as conn:
        rows = (await conn.execute(text(explain + statement.text), params)).all()
        await conn.rollback()
    return "\n".join(str(row[-1]) for row in rows)


NO_JITTER = RetryPolicy(initial_backoff_ms=1000, max_backoff_ms=60_000, multiplier=2.0, jitter=0.0)

__all__ = ["NO_JITTER", "Priority", "ack", "lease", "nack", "spec"]
