"""Per-queue settings (paused, max depth): SQL is the truth, Redis mirrors the paused flag."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import select, update

from dispatcher.domain.models import QUEUE_LIMIT_FIELDS, QueueSettings
from dispatcher.store.sql.runs import RunStore, RunsTx, translate_errors
from dispatcher.store.sql.tables import queue_settings


def _settings(r: object) -> QueueSettings:
    m = r._mapping  # type: ignore[attr-defined]
    return QueueSettings(
        m["namespace"], m["queue"], bool(m["paused"]), **{f: m[f] for f in QUEUE_LIMIT_FIELDS}
    )


async def all_settings(store: RunStore) -> list[QueueSettings]:
    async with translate_errors(), store.engine.connect() as conn:
        rows = (await conn.execute(select(queue_settings))).all()
    return [_settings(r) for r in rows]


async def upsert(tx: RunsTx, ns: str, queue: str, now_ms: int, **changes: object) -> QueueSettings:
    """Change some settings of a queue (creating its row), locked for the transaction."""
    key = (queue_settings.c.namespace == ns) & (queue_settings.c.queue == queue)
    row = (await tx.conn.execute(select(queue_settings).where(key).with_for_update())).first()
    current = _settings(row) if row is not None else QueueSettings(ns, queue)
    new = replace(current, **changes)  # type: ignore[arg-type]
    values = {"paused": new.paused, "updated_at": now_ms}
    values.update({f: getattr(new, f) for f in QUEUE_LIMIT_FIELDS})
    if row is None:
        await tx.conn.execute(queue_settings.insert().values(namespace=ns, queue=queue, **values))
    else:
        await tx.conn.execute(update(queue_settings).where(key).values(**values))
    return new
