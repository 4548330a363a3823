"""Deleting finished jobs past their retention, delivered webhooks and recorded
EnqueueBatch calls past their window, in bounded batches."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, or_, select, tuple_

from dispatcher.store.sql.runs import RunsTx
from dispatcher.store.sql.tables import (
    enqueue_calls,
    job_dependencies,
    run_events,
    runs,
    webhook_attempts,
    webhook_outbox,
)


async def delete_jobs(tx: RunsTx, ids: Sequence[str], cutoff_ms: int) -> int:
    """Delete jobs with their events and dependency edges. Returns jobs deleted.

    The candidates were picked outside this transaction: each is checked again,
    locked, so that a job an operator retried in between is left alone.
    """
    if not ids:
        return 0
    still = (
        select(runs.c.id)
        .where(runs.c.id.in_(list(ids)), runs.c.finished_at < cutoff_ms)
        .with_for_update()
    )
    ids = list((await tx.conn.execute(still)).scalars())
    if not ids:
        return 0
    await tx.conn.execute(delete(run_events).where(run_events.c.job_id.in_(ids)))
    await tx.conn.execute(
        delete(job_dependencies).where(
            or_(job_dependencies.c.job_id.in_(ids), job_dependencies.c.depends_on.in_(ids))
        )
    )
    result = await tx.conn.execute(delete(runs).where(runs.c.id.in_(ids)))
    return int(result.rowcount or 0)


async def delete_settled_webhooks(tx: RunsTx, cutoff_ms: int, limit: int) -> int:
    """Delete delivered or abandoned outbox rows (and their attempts) created before cutoff."""
    pick = (
        select(webhook_outbox.c.id)
        .where(webhook_outbox.c.state != "pending", webhook_outbox.c.created_at < cutoff_ms)
        .limit(limit)
    )
    ids = list((await tx.conn.execute(pick)).scalars())
    if ids:
        await tx.conn.execute(delete(webhook_attempts).where(webhook_attempts.c.outbox_id.in_(ids)))
        await tx.conn.execute(delete(webhook_outbox).where(webhook_outbox.c.id.in_(ids)))
    return len(ids)


async def delete_calls_before(tx: RunsTx, cutoff_ms: int, limit: int) -> int:
    """Delete recorded EnqueueBatch calls made before cutoff (their window has
    passed: a repeat would be enqueued anew anyway). Returns calls deleted."""
    pick = (
        select(enqueue_calls.c.namespace, enqueue_calls.c.request_id)
        .where(enqueue_calls.c.created_at < cutoff_ms)
        .order_by(enqueue_calls.c.created_at)
        .limit(limit)
    )
    keys = [tuple(r) for r in (await tx.conn.execute(pick)).all()]
    if keys:
        await tx.conn.execute(
            delete(enqueue_calls).where(
                tuple_(enqueue_calls.c.namespace, enqueue_calls.c.request_id).in_(keys)
            )
        )
    return len(keys)
