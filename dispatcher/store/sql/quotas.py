"""Per-namespace quotas in SQL, and the counts they are checked against."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import func, select, update

from dispatcher.domain.models import JobState, NamespaceQuota
from dispatcher.store.sql.runs import LIVE_STATES, RunStore, RunsTx, translate_errors
from dispatcher.store.sql.tables import namespace_quotas, runs

FIELDS = ("enqueue_rate_per_s", "enqueue_burst", "max_live_jobs", "max_leases")


def _quota(r: object) -> NamespaceQuota:
    m = r._mapping  # type: ignore[attr-defined]
    return NamespaceQuota(m["namespace"], **{f: m[f] for f in FIELDS})


async def all_quotas(store: RunStore) -> list[NamespaceQuota]:
    async with translate_errors(), store.engine.connect() as conn:
        return [_quota(r) for r in (await conn.execute(select(namespace_quotas))).all()]


async def upsert(tx: RunsTx, ns: str, now_ms: int, **changes: object) -> NamespaceQuota:
    key = namespace_quotas.c.namespace == ns
    row = (await tx.conn.execute(select(namespace_quotas).where(key).with_for_update())).first()
    new = replace(_quota(row) if row is not None else NamespaceQuota(ns), **changes)  # type: ignore[arg-type]
    values = {f: getattr(new, f) for f in FIELDS} | {"updated_at": now_ms}
    if row is None:
        await tx.conn.execute(namespace_quotas.insert().values(namespace=ns, **values))
    else:
        await tx.conn.execute(update(namespace_quotas).where(key).values(**values))
    return new


async def count(store: RunStore, ns: str, states: list[str]) -> int:
    stmt = select(func.count()).where(runs.c.state.in_(states), runs.c.namespace == ns)
    async with translate_errors(), store.engine.connect() as conn:
        return int((await conn.execute(stmt)).scalar_one())


async def live_jobs(store: RunStore, ns: str) -> int:
    return await count(store, ns, [s for s in LIVE_STATES if s != JobState.LEASED.value])


async def leases(store: RunStore, ns: str) -> int:
    return await count(store, ns, [JobState.LEASED.value])
