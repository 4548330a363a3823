"""SQL for operators: queue statistics, job listings, purges and the audit log."""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import delete, func, select

from dispatcher.domain.models import Job, JobState
from dispatcher.store.sql.runs import RunStore, RunsTx, row_to_job, translate_errors
from dispatcher.store.sql.tables import admin_audit, run_events, runs

COUNTED = [
    JobState.QUEUED.value,
    JobState.SCHEDULED.value,
    JobState.LEASED.value,
    JobState.DEAD_LETTERED.value,
]


class AdminQueries:
    def __init__(self, store: RunStore) -> None:
        self.store = store

    async def counts(self, ns: str, queue: str) -> dict[tuple[str, int], int]:
        """Jobs per (state, priority) for the non-succeeded states."""
        stmt = (
            select(runs.c.state, runs.c.priority, func.count())
            .where(runs.c.state.in_(COUNTED), runs.c.namespace == ns, runs.c.queue == queue)
            .group_by(runs.c.state, runs.c.priority)
        )
        async with translate_errors(), self.store.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return {(r[0], r[1]): r[2] for r in rows}

    async def oldest_queued(self, ns: str, queue: str) -> dict[int, int]:
        """The earliest ready time of a QUEUED job, per priority."""
        stmt = (
            select(runs.c.priority, func.min(runs.c.run_at))
            .where(
                runs.c.state == JobState.QUEUED.value,
                runs.c.namespace == ns,
                runs.c.queue == queue,
            )
            .group_by(runs.c.priority)
        )
        async with translate_errors(), self.store.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return {r[0]: r[1] for r in rows}

    async def finished_since(self, ns: str, queue: str, since_ms: int) -> dict[str, int]:
        stmt = (
            select(runs.c.state, func.count())
            .where(runs.c.namespace == ns, runs.c.queue == queue, runs.c.finished_at >= since_ms)
            .group_by(runs.c.state)
        )
        async with translate_errors(), self.store.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return {r[0]: r[1] for r in rows}

    async def list_jobs(
        self, ns: str, queue: str, state: JobState | None, before_id: str, limit: int
    ) -> list[Job]:
        """Jobs of a queue, newest first, strictly older than `before_id` when given."""
        stmt = select(runs).where(runs.c.namespace == ns, runs.c.queue == queue)
        if state is not None:
            stmt = stmt.where(runs.c.state == state.value)
        if before_id:
            stmt = stmt.where(runs.c.id < before_id)
        stmt = stmt.order_by(runs.c.id.desc()).limit(limit)
        async with translate_errors(), self.store.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [row_to_job(r) for r in rows]

    async def leases_by_holder(self, ns: str) -> dict[str, int]:
        stmt = (
            select(runs.c.lease_holder, func.count())
            .where(runs.c.state == JobState.LEASED.value, runs.c.namespace == ns)
            .group_by(runs.c.lease_holder)
        )
        async with translate_errors(), self.store.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return {r[0]: r[1] for r in rows}


async def lock_dead(tx: RunsTx, ns: str, queue: str, limit: int) -> list[Job]:
    """Dead-lettered jobs of a queue, locked, oldest first."""
    stmt = (
        select(runs)
        .where(
            runs.c.state == JobState.DEAD_LETTERED.value,
            runs.c.namespace == ns,
            runs.c.queue == queue,
        )
        .order_by(runs.c.id)
        .limit(limit)
        .with_for_update()
    )
    rows = (await tx.conn.execute(stmt)).all()
    return [row_to_job(r) for r in rows]


async def delete_in_states(
    tx: RunsTx, ns: str, queue: str, states: Sequence[JobState], limit: int
) -> list[str]:
    """Delete up to `limit` jobs (and their events) of a queue in the given states."""
    pick = (
        select(runs.c.id)
        .where(
            runs.c.namespace == ns,
            runs.c.queue == queue,
            runs.c.state.in_([s.value for s in states]),
        )
        .limit(limit)
        .with_for_update()
    )
    ids = list((await tx.conn.execute(pick)).scalars())
    if ids:
        await tx.conn.execute(delete(run_events).where(run_events.c.job_id.in_(ids)))
        await tx.conn.execute(delete(runs).where(runs.c.id.in_(ids)))
    return ids


async def audit(
    tx: RunsTx, at_ms: int, action: str, ns: str, target: str, detail: dict[str, object]
) -> None:
    await tx.conn.execute(
        admin_audit.insert().values(
            at=at_ms,
            action=action,
            namespace=ns,
            target=target[:256],
            detail=json.dumps(detail, separators=(",", ":"), default=str),
        )
    )
