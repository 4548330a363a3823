"""The schedules repository: rows of the schedules table, and the two compare-and-sets
that make each tick fire once.

`claim_due` takes due schedules for a short while (claimed_until), re-checking
in its UPDATE that each is still due, unpaused and unclaimed, and returns only
the rows it took: on PostgreSQL candidates are picked FOR UPDATE SKIP LOCKED,
on SQLite the write transaction is exclusive. `advance` moves a schedule past
a tick only if its next_fire_at is still that tick, so a replica that lost its
claim changes nothing. The template is stored as JSON (payload in base64),
independent of the wire format.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from sqlalchemy import delete, false, func, select, update
from sqlalchemy.engine import Row

from dispatcher.domain.models import JobSpec, Priority, RetryPolicy
from dispatcher.domain.schedules import MisfirePolicy, Schedule, ScheduleSpec
from dispatcher.store.sql import claims
from dispatcher.store.sql.runs import RunStore, RunsTx, translate_errors
from dispatcher.store.sql.tables import schedules

s = schedules


def template_to_json(t: JobSpec) -> str:
    """A template as JSON. idempotency_key, run_at and depends_on are never set on one."""
    r = t.retry_policy
    return json.dumps(
        {
            "queue": t.queue,
            "type": t.type,
            "payload": base64.b64encode(t.payload).decode(),
            "content_type": t.content_type,
            "priority": int(t.priority),
            "metadata": t.metadata,
            "max_attempts": t.max_attempts,
            "retry_policy": None
            if r is None
            else [r.initial_backoff_ms, r.max_backoff_ms, r.multiplier, r.jitter],
            "lease_duration_ms": t.lease_duration_ms,
            "delay_ms": t.delay_ms,
            "callback_url": t.callback_url,
            "start_within_ms": t.start_within_ms,
            "max_run_ms": t.max_run_ms,
            "concurrency_key": t.concurrency_key,
        },
        separators=(",", ":"),
    )


def template_from_json(text: str) -> JobSpec:
    d = json.loads(text)
    r = d["retry_policy"]
    return JobSpec(
        queue=d["queue"],
        type=d["type"],
        payload=base64.b64decode(d["payload"]),
        content_type=d["content_type"],
        priority=Priority(d["priority"]),
        metadata=d["metadata"],
        max_attempts=d["max_attempts"],
        retry_policy=None if r is None else RetryPolicy(*r),
        lease_duration_ms=d["lease_duration_ms"],
        delay_ms=d["delay_ms"],
        callback_url=d["callback_url"],
        start_within_ms=d["start_within_ms"],
        max_run_ms=d["max_run_ms"],
        concurrency_key=d["concurrency_key"],
    )


def _to_row(x: Schedule) -> dict[str, Any]:
    return {
        "id": x.id,
        "namespace": x.namespace,
        "name": x.spec.name,
        "cron": x.spec.cron,
        "interval_ms": x.spec.interval_ms,
        "timezone": x.spec.timezone,
        "template": template_to_json(x.spec.template),
        "misfire_policy": x.spec.misfire_policy.value,
        "paused": x.paused,
        "next_fire_at": x.next_fire_ms,
        "last_fire_at": x.last_fire_ms,
        "last_job_id": x.last_job_id,
        "last_error": x.last_error,
        "claimed_until": 0,
        "created_at": x.created_ms,
    }


def _from_row(r: Row[Any]) -> Schedule:
    m = r._mapping
    spec = ScheduleSpec(
        name=m["name"],
        template=template_from_json(m["template"]),
        cron=m["cron"],
        interval_ms=m["interval_ms"],
        timezone=m["timezone"],
        misfire_policy=MisfirePolicy(m["misfire_policy"]),
    )
    return Schedule(
        id=m["id"],
        namespace=m["namespace"],
        spec=spec,
        created_ms=m["created_at"],
        next_fire_ms=m["next_fire_at"],
        paused=bool(m["paused"]),
        last_fire_ms=m["last_fire_at"],
        last_job_id=m["last_job_id"],
        last_error=m["last_error"],
    )


def _key(ns: str, schedule_id: str) -> Any:
    return (s.c.id == schedule_id) & (s.c.namespace == ns)


class ScheduleStore:
    """Schedule statements over the runs store's engine (and its SQLite write lock)."""

    def __init__(self, runs: RunStore) -> None:
        self.runs = runs

    async def _one(self, stmt: Any) -> Schedule | None:
        async with translate_errors(), self.runs.engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        return None if row is None else _from_row(row)

    async def get(self, ns: str, schedule_id: str) -> Schedule | None:
        return await self._one(select(s).where(_key(ns, schedule_id)))

    async def by_name(self, ns: str, name: str) -> Schedule | None:
        return await self._one(select(s).where(s.c.namespace == ns, s.c.name == name))

    async def count(self, ns: str) -> int:
        async with translate_errors(), self.runs.engine.connect() as conn:
            stmt = select(func.count()).where(s.c.namespace == ns)
            return int((await conn.execute(stmt)).scalar_one())

    async def page(self, ns: str, after_name: str, limit: int) -> list[Schedule]:
        """Schedules of a namespace by name, strictly after `after_name`."""
        stmt = (
            select(s)
            .where(s.c.namespace == ns, s.c.name > after_name)
            .order_by(s.c.name)
            .limit(limit)
        )
        async with translate_errors(), self.runs.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [_from_row(r) for r in rows]

    # ---- writes, inside a caller's transaction ------------------------------

    @staticmethod
    async def insert(tx: RunsTx, x: Schedule) -> None:
        """Insert a schedule; DuplicateKey if its name is taken (a concurrent create)."""
        await tx.conn.execute(s.insert().values(**_to_row(x)))

    @staticmethod
    async def lock(tx: RunsTx, ns: str, schedule_id: str) -> Schedule | None:
        stmt = select(s).where(_key(ns, schedule_id)).with_for_update()
        row = (await tx.conn.execute(stmt)).first()
        return None if row is None else _from_row(row)

    @staticmethod
    async def set_state(tx: RunsTx, x: Schedule) -> None:
        """Write paused and next_fire_at of a schedule locked in this transaction."""
        stmt = (
            update(s)
            .where(s.c.id == x.id)
            .values(paused=x.paused, next_fire_at=x.next_fire_ms, claimed_until=0)
        )
        await tx.conn.execute(stmt)

    @staticmethod
    async def delete(tx: RunsTx, ns: str, schedule_id: str) -> bool:
        result = await tx.conn.execute(delete(s).where(_key(ns, schedule_id)))
        return bool(result.rowcount)

    # ---- firing -------------------------------------------------------------

    async def claim_due(self, now_ms: int, until_ms: int, limit: int) -> list[Schedule]:
        """Claim up to `limit` unpaused schedules due at `now_ms` until `until_ms`,
        most overdue first; only the rows this call took come back."""
        due = (s.c.paused == false()) & (s.c.next_fire_at <= now_ms) & (s.c.claimed_until <= now_ms)
        order = (s.c.next_fire_at, s.c.id)
        rows = await claims.claim_due(self.runs, s, due, order, until_ms, limit, [s])
        return sorted((_from_row(r) for r in rows), key=lambda x: (x.next_fire_ms, x.id))

    async def advance(
        self,
        schedule_id: str,
        tick_ms: int,
        next_ms: int,
        fired: tuple[int, str] | None,
        error: str = "",
    ) -> bool:
        """Move a schedule from `tick_ms` to `next_ms` if it is still at `tick_ms`,
        recording the (tick, job id) it fired; False if another replica moved it first."""
        values: dict[str, Any] = {"next_fire_at": next_ms, "claimed_until": 0, "last_error": error}
        if fired is not None:
            values.update(last_fire_at=fired[0], last_job_id=fired[1])
        stmt = update(s).where(s.c.id == schedule_id, s.c.next_fire_at == tick_ms).values(values)
        async with self.runs.transaction() as tx:
            result = await tx.conn.execute(stmt)
        return bool(result.rowcount)

    async def retry_at(self, schedule_id: str, tick_ms: int, at_ms: int, error: str) -> None:
        """Give a claimed tick back, to be tried again from `at_ms` on, noting why."""
        stmt = (
            update(s)
            .where(s.c.id == schedule_id, s.c.next_fire_at == tick_ms)
            .values(claimed_until=at_ms, last_error=error)
        )
        async with self.runs.transaction() as tx:
            await tx.conn.execute(stmt)
