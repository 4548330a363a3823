"""The webhook outbox: claiming due deliveries and recording how each attempt went.

Rows are written by `RunsTx.save` in the transaction that finishes a job;
this module only reads and updates `webhook_outbox` and appends to
`webhook_attempts`. It never touches `runs`. Claims are safe across
replicas (`claims.claim_due`, shared with the schedules).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import and_, bindparam, update

from dispatcher.store.sql import claims
from dispatcher.store.sql.runs import RunStore
from dispatcher.store.sql.tables import webhook_attempts, webhook_outbox

o = webhook_outbox


class OutboxState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # given up: refused, 410 Gone, or the retry schedule ran out


@dataclass(frozen=True)
class OutboxItem:
    """One webhook to deliver, as claimed."""

    id: int
    job_id: str
    namespace: str
    url: str
    body: bytes
    created_ms: int
    attempts: int  # attempts made before this one


@dataclass(frozen=True)
class Settlement:
    """The outcome of one attempt: the row's next state and the attempt's record."""

    outbox_id: int
    state: OutboxState
    next_attempt_ms: int
    at_ms: int
    status_code: int  # 0 when no response came back
    error: str
    duration_ms: int


_SETTLE = (
    update(o)
    .where(and_(o.c.id == bindparam("o_id"), o.c.state == OutboxState.PENDING.value))
    .values(
        state=bindparam("o_state"),
        next_attempt_at=bindparam("o_next"),
        attempts=o.c.attempts + 1,
        claimed_until=0,
    )
)


class WebhookOutbox:
    """Outbox statements over the runs store's engine (and its SQLite write lock)."""

    def __init__(self, runs: RunStore) -> None:
        self.runs = runs

    async def claim_due(self, now_ms: int, until_ms: int, limit: int) -> list[OutboxItem]:
        """Claim up to `limit` pending rows due at `now_ms` until `until_ms`, oldest due first."""
        due = and_(
            o.c.state == OutboxState.PENDING.value,
            o.c.next_attempt_at <= now_ms,
            o.c.claimed_until <= now_ms,
        )
        columns = [
            o.c.id, o.c.job_id, o.c.namespace, o.c.url, o.c.body, o.c.created_at, o.c.attempts,
            o.c.next_attempt_at,
        ]  # fmt: skip
        order = (o.c.next_attempt_at, o.c.id)
        rows = await claims.claim_due(self.runs, o, due, order, until_ms, limit, columns)
        return [
            OutboxItem(r.id, r.job_id, r.namespace, r.url, bytes(r.body), r.created_at, r.attempts)
            for r in sorted(rows, key=lambda r: (r.next_attempt_at, r.id))
        ]

    async def settle(self, results: Sequence[Settlement]) -> None:
        """Record each attempt and move its row on; a row settled elsewhere stays as it is."""
        if not results:
            return
        async with self.runs.transaction() as tx:
            await tx.conn.execute(
                _SETTLE,
                [
                    {"o_id": s.outbox_id, "o_state": s.state.value, "o_next": s.next_attempt_ms}
                    for s in results
                ],
            )
            await tx.conn.execute(
                webhook_attempts.insert(),
                [
                    {
                        "outbox_id": s.outbox_id,
                        "at": s.at_ms,
                        "status_code": s.status_code,
                        "error": s.error,
                        "duration_ms": s.duration_ms,
                    }
                    for s in results
                ],
            )
