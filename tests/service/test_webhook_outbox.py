"""A job with a callback URL gets an outbox row in the transaction that finishes it."""

from __future__ import annotations

import json

from sqlalchemy import select

from dispatcher.app import Components
from dispatcher.store.sql.tables import webhook_outbox
from tests.service.helpers import ack, lease, nack, spec


async def _outbox(c: Components) -> list[dict[str, object]]:
    async with c.runs.engine.connect() as conn:
        rows = (await conn.execute(select(webhook_outbox).order_by(webhook_outbox.c.id))).all()
    return [dict(r._mapping) for r in rows]


async def test_each_terminal_transition_writes_exactly_one_outbox_row_with_the_outcome(
    replica: Components,
) -> None:
    url = "https://hooks.example.com/done"
    await replica.dispatcher.enqueue("", spec(callback_url=url, max_attempts=2))
    await replica.dispatcher.enqueue("", spec(callback_url=url, max_attempts=1))
    await replica.dispatcher.enqueue("", spec())  # no callback: no row
    a, b, c = await lease(replica, n=3)
    assert await _outbox(replica) == []
    await ack(replica, a.token, b"ok")
    await nack(replica, b.token, error="bad")
    await ack(replica, c.token)
    rows = await _outbox(replica)
    assert [r["job_id"] for r in rows] == [a.job.id, b.job.id]
    assert {r["state"] for r in rows} == {"pending"} and {r["url"] for r in rows} == {url}
    first = json.loads(rows[0]["body"])  # type: ignore[arg-type]
    assert first["type"] == "job.succeeded" and first["data"]["result"] == "b2s="
    second = json.loads(rows[1]["body"])  # type: ignore[arg-type]
    assert second["type"] == "job.dead_lettered"
    assert second["data"]["terminal_reason"] == "attempts_exhausted"
    await ack(replica, a.token, b"ok")  # a repeated Ack writes nothing more
    assert len(await _outbox(replica)) == 2
