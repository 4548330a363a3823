"""On PostgreSQL an Ack of a plainly held lease is one statement (`RunStore.ack_held`).
It must write exactly what `transitions.ack` writes, touch nothing it may not
settle, and leave every other item to the general path, answered in order."""

from __future__ import annotations

from sqlalchemy import text

from dispatcher.app import Components
from dispatcher.clock import FakeClock
from dispatcher.domain import auth, transitions
from dispatcher.domain.auth import Principal
from dispatcher.domain.errors import InvalidArgument, LeaseExpired
from dispatcher.domain.models import Acked, AckItem, HeartbeatItem, JobState, Settled, Transition
from dispatcher.store.sql.runs import AckHeld
from tests.service.helpers import PRIMARY_KEY_INDEX, lease, query_plan, spec


async def test_acking_a_held_lease_in_one_statement_writes_what_transitions_ack_writes(
    replica: Components, clock: FakeClock
) -> None:
    await replica.dispatcher.enqueue("", spec())
    (g,) = await lease(replica)
    before = await replica.runs.get(g.job.id)
    assert before is not None
    clock.advance(1.5)
    now = clock.now_ms()
    item = AckItem(g.token, b'{"ok":true}', "application/json")

    acked = await replica.runs.ack_held(
        before.namespace,
        [AckHeld(g.job.id, g.token, item.result, item.result_content_type)],
        now,
        "",
    )

    expected = transitions.ack(before, item, now)
    assert await replica.runs.get(g.job.id) == expected
    e = expected
    assert acked == {
        e.id: Acked(
            e.id,
            e.namespace,
            e.queue,
            e.version,
            e.state,
            e.attempt,
            e.priority,
            e.run_at_ms,
            e.lease_expires_ms,
            e.concurrency_key,
            e.started_ms,
            e.finished_ms,
        )
    }
    assert await replica.runs.events_after({g.job.id: before.version}) == [
        Transition(g.job.id, before.version + 1, JobState.SUCCEEDED, 1, now, "")
    ]


async def test_the_one_statement_ack_takes_only_plainly_held_leases_of_its_caller(
    replica: Components, clock: FakeClock
) -> None:
    for _ in range(4):
        await replica.dispatcher.enqueue("", spec(lease_duration_ms=10_000))
    token = auth.current_principal.set(Principal("key-a", "default", frozenset()))
    try:
        plain, expiring, cancelled, depended_on = await lease(replica, n=4)
    finally:
        auth.current_principal.reset(token)
    await replica.dispatcher.cancel("", cancelled.job.id, "no longer wanted")
    await replica.dispatcher.enqueue("", spec(depends_on=[depended_on.job.id]))
    clock.advance(5)  # renew all but `expiring`, then let it expire
    live = (plain, cancelled, depended_on)
    await replica.dispatcher.heartbeat("", [HeartbeatItem(g.token) for g in live])
    clock.advance(6)
    leases = (plain, expiring, cancelled, depended_on)
    rows_before = {g.job.id: await replica.runs.get(g.job.id) for g in leases}
    asks = [AckHeld(g.job.id, g.token, b"", "") for g in leases]
    ns, now = plain.job.namespace, clock.now_ms()

    from_elsewhere = await replica.runs.ack_held("elsewhere", asks, now, "key-a")
    by_another_key = await replica.runs.ack_held(ns, asks, now, "key-b")

    assert from_elsewhere == {} and by_another_key == {}
    for job_id, row in rows_before.items():
        assert await replica.runs.get(job_id) == row
    acked = await replica.runs.ack_held(ns, asks, now, "key-a")
    assert set(acked) == {plain.job.id}
    for job_id, row in rows_before.items():
        if job_id != plain.job.id:
            assert await replica.runs.get(job_id) == row


async def test_an_ack_call_mixing_held_stale_repeated_and_malformed_tokens_answers_in_order(
    replica: Components, clock: FakeClock
) -> None:
    for _ in range(3):
        await replica.dispatcher.enqueue("", spec(lease_duration_ms=2000))
    stale, held, twice = await lease(replica, n=3)
    clock.advance(1)
    await replica.dispatcher.heartbeat("", [HeartbeatItem(held.token), HeartbeatItem(twice.token)])
    clock.advance(1.5)  # `stale` has expired, the other two were renewed

    results = await replica.dispatcher.ack(
        "",
        [
            AckItem(held.token, b"A"),
            AckItem(stale.token, b"late"),
            AckItem(twice.token, b"first"),
            AckItem("not-a-token"),
            AckItem(twice.token, b"second"),
        ],
    )

    assert results[0] == Settled(held.token, JobState.SUCCEEDED)
    assert isinstance(results[1], LeaseExpired)
    assert results[2] == Settled(twice.token, JobState.SUCCEEDED)
    assert isinstance(results[3], InvalidArgument)
    assert [v.field for v in results[3].violations] == ["items[3].lease_token"]
    assert results[4] == Settled(twice.token, JobState.SUCCEEDED)
    done_held, done_twice = [await replica.runs.get(g.job.id) for g in (held, twice)]
    assert done_held is not None and done_twice is not None
    assert (done_held.state, done_held.result) == (JobState.SUCCEEDED, b"A")
    assert (done_twice.state, done_twice.result) == (JobState.SUCCEEDED, b"first")
    after_stale = await replica.runs.get(stale.job.id)
    assert after_stale is not None and after_stale.state is JobState.LEASED


async def test_the_one_statement_ack_reaches_rows_by_primary_key_only(
    replica: Components, clock: FakeClock
) -> None:
    """Not through the state index, which would visit every leased row (see ACK_HELD)."""
    for _ in range(20):  # enough rows that reading them all costs more than an index
        await replica.dispatcher.enqueue_batch("", [spec() for _ in range(100)])
    granted = await lease(replica, n=20)
    async with replica.runs.engine.connect() as conn:
        await conn.execute(text("ANALYZE runs"))  # the planner sees 20 leased rows of 2,000
        await conn.commit()
    statement = replica.runs.ack_held_statement(
        granted[0].job.namespace,
        [AckHeld(g.job.id, g.token, b"", "") for g in granted],
        clock.now_ms(),
        "",
    )

    plan = await query_plan(replica, *statement)

    dialect = replica.runs.engine.dialect.name
    assert PRIMARY_KEY_INDEX[dialect] in plan
    assert "ix_runs_state_queue" not in plan
