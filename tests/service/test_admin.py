"""Operator operations: queue stats, listings, dead-letter retry, purge, workers, audit."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from dispatcher.app import Components
from dispatcher.clock import FakeClock
from dispatcher.domain.errors import InvalidArgument, InvalidTransition, LeaseExpired
from dispatcher.domain.models import JobState, Priority
from dispatcher.store.sql.tables import admin_audit
from tests.service.helpers import ack, lease, nack, spec


async def _audit_actions(c: Components) -> list[tuple[str, str]]:
    async with c.runs.engine.connect() as conn:
        rows = (await conn.execute(select(admin_audit.c.action, admin_audit.c.target))).all()
    return [(r[0], r[1]) for r in rows]


async def test_queue_stats_count_each_state_per_priority_and_recent_throughput(
    replica: Components, clock: FakeClock
) -> None:
    d = replica.dispatcher
    await d.enqueue("", spec(priority=Priority.HIGH))
    clock.advance(10)
    await d.enqueue("", spec(priority=Priority.HIGH))
    await d.enqueue("", spec(priority=Priority.LOW, delay_ms=60_000))
    await d.enqueue_batch("", [spec(priority=Priority.CRITICAL, max_attempts=1)] * 2)
    g1, g2 = await lease(replica, n=2)  # the two critical ones
    await ack(replica, g1.token)
    await nack(replica, g2.token, retry=False)
    page = await replica.admin.list_queues("", 0, "")
    (q,) = page.items
    by_p = {p.priority: p for p in q.priorities}
    assert (by_p[Priority.HIGH].queued, by_p[Priority.HIGH].oldest_queued_age_ms) == (2, 10_000)
    assert by_p[Priority.LOW].scheduled == 1
    assert by_p[Priority.CRITICAL].dead_lettered == 1
    assert (q.succeeded_last_minute, q.dead_lettered_last_minute) == (1, 1)
    clock.advance(61)
    (later,) = (await replica.admin.list_queues("", 0, "")).items
    assert later.succeeded_last_minute == 0


async def test_queues_are_listed_by_name_in_pages(replica: Components) -> None:
    for name in ["c", "a", "b"]:
        await replica.dispatcher.enqueue("", spec(queue=name))
    await replica.dispatcher.enqueue("other-ns", spec(queue="zz"))
    first = await replica.admin.list_queues("", 2, "")
    second = await replica.admin.list_queues("", 2, first.next_token)
    assert [q.name for q in first.items] == ["a", "b"]
    assert [q.name for q in second.items] == ["c"] and second.next_token == ""


async def test_jobs_are_listed_newest_first_in_pages_and_filtered_by_state(
    replica: Components,
) -> None:
    ids = [(await replica.dispatcher.enqueue("", spec())).job.id for _ in range(5)]
    (g,) = await lease(replica)
    pages, token = [], ""
    while True:
        page = await replica.admin.list_jobs("", "q", None, 2, token)
        pages.append([j.id for j in page.items])
        token = page.next_token
        if not token:
            break
    assert pages == [ids[::-1][0:2], ids[::-1][2:4], ids[::-1][4:5]]
    leased = await replica.admin.list_jobs("", "q", JobState.LEASED, 0, "")
    assert [j.id for j in leased.items] == [g.job.id]
    with pytest.raises(InvalidArgument):
        await replica.admin.list_jobs("", "q", None, 0, "!!not-a-token")


async def test_retrying_dead_letters_requeues_them_with_fresh_attempts_and_old_tokens_stay_dead(
    replica: Components,
) -> None:
    await replica.dispatcher.enqueue_batch("", [spec(max_attempts=1)] * 3)
    granted = await lease(replica, n=3)
    for g in granted:
        await nack(replica, g.token, retry=False)
    assert await replica.admin.retry_dead_lettered("", granted[0].job.id, "") == 1
    assert await replica.admin.retry_dead_lettered("", "", "q") == 2
    with pytest.raises(LeaseExpired):
        await nack(replica, granted[0].token)
    again = await lease(replica, n=10)
    assert sorted(g.job.id for g in again) == sorted(g.job.id for g in granted)
    assert {g.job.attempt for g in again} == {1}
    with pytest.raises(InvalidTransition):
        await replica.admin.retry_dead_lettered("", granted[0].job.id, "")
    assert await _audit_actions(replica) == [
        ("retry_dead_lettered", granted[0].job.id),
        ("retry_dead_lettered", "q"),
    ]


async def test_purging_removes_waiting_jobs_from_sql_and_redis_but_never_leased_ones(
    replica: Components,
) -> None:
    await replica.dispatcher.enqueue_batch("", [spec()] * 4 + [spec(delay_ms=60_000)])
    (held,) = await lease(replica)
    assert await replica.admin.purge_queue("", "q", []) == 4
    assert await lease(replica, n=10) == []
    assert await replica.runs.count_by_state() == {"leased": 1}
    assert await replica.index.depth("default", "q") == (0, 0, 1)
    with pytest.raises(InvalidArgument):
        await replica.admin.purge_queue("", "q", [JobState.LEASED])
    await ack(replica, held.token)
    assert await _audit_actions(replica) == [("purge_queue", "q")]


async def test_workers_are_listed_with_when_they_were_seen_and_the_leases_they_hold(
    replica: Components, clock: FakeClock
) -> None:
    await replica.dispatcher.enqueue_batch("", [spec()] * 3)
    await lease(replica, n=2, worker="alpha")
    await lease(replica, n=0, worker="beta", queues=["empty"])
    await replica.workers.flush()
    workers = {w.worker_id: w for w in await replica.admin.list_workers("")}
    assert (workers["alpha"].leases_held, workers["beta"].leases_held) == (2, 0)
    assert workers["alpha"].last_seen_ms == clock.now_ms()
