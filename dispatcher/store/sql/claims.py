"""Claiming due rows across replicas: the webhook outbox and the schedules share it.

Candidates are picked with FOR UPDATE SKIP LOCKED on PostgreSQL (SQLite has one
writer), then claimed by an UPDATE that re-checks the same condition and sets
`claimed_until`, returning only the rows it actually took: a row another
replica claimed in between is not taken twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Table, select, update
from sqlalchemy.engine import Row

from dispatcher.store.sql.runs import RunStore


async def claim_due(
    runs: RunStore,
    table: Table,
    due: ColumnElement[bool],
    order_by: Sequence[Any],
    until_ms: int,
    limit: int,
    returning: Sequence[Any],
) -> Sequence[Row[Any]]:
    """Claim up to `limit` rows matching `due` (in `order_by` order) until `until_ms`."""
    pick = (
        select(table.c.id)
        .where(due)
        .order_by(*order_by)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    async with runs.transaction() as tx:
        ids = list((await tx.conn.execute(pick)).scalars())
        if not ids:
            return []
        claim = (
            update(table)
            .where(table.c.id.in_(ids), due)
            .values(claimed_until=until_ms)
            .returning(*returning)
        )
        return (await tx.conn.execute(claim)).all()
