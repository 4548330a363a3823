"""On PostgreSQL a Lease of plainly QUEUED jobs is one statement (`RunStore.lease_queued`).
It must write exactly what `transitions.lease` writes, touch nothing that is not
plainly QUEUED in the caller's namespace, and leave every other picked job to
the general path, which dead-letters it, skips it or forgets it."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from dispatcher.app import Components
from dispatcher.clock import FakeClock
from dispatcher.domain import ids, transitions
from dispatcher.domain.models import (
    HeartbeatItem,
    JobState,
    NackItem,
    Priority,
    TerminalReason,
    Transition,
    evolve,
)
from tests.service.helpers import PRIMARY_KEY_INDEX, lease, query_plan, spec


@pytest.mark.parametrize(
    ("own_duration_ms", "max_run_ms", "asked_duration_ms"),
    [
        (30_000, None, None),  # the job's own lease duration
        (30_000, None, 45_000),  # the caller's
        (30_000, 20_000, None),  # capped by the attempt's maximum run time
        (30_000, 20_000, 4_000),  # the caller's, under the cap
    ],
)
async def test_leasing_a_queued_job_in_one_statement_writes_what_transitions_lease_writes(
    replica: Components,
    clock: FakeClock,
    own_duration_ms: int,
    max_run_ms: int | None,
    asked_duration_ms: int | None,
) -> None:
    job_spec = spec(lease_duration_ms=own_duration_ms, max_run_ms=max_run_ms)
    job = (await replica.dispatcher.enqueue("", job_spec)).job
    before = await replica.runs.get(job.id)
    assert before is not None
    clock.advance(1.5)
    now, token = clock.now_ms(), ids.new_lease_token(job.id)

    leased = await replica.runs.lease_queued(
        job.namespace, [(job.id, token)], "worker-1", now, asked_duration_ms, "key-a"
    )

    expected = evolve(
        transitions.lease(before, token, "worker-1", now, asked_duration_ms or own_duration_ms),
        lease_principal="key-a",
    )
    assert leased == {job.id: expected}
    assert await replica.runs.get(job.id) == expected
    assert await replica.runs.events_after({job.id: before.version}) == [
        Transition(job.id, before.version + 1, JobState.LEASED, 1, now, "")
    ]


async def test_a_job_given_back_after_reporting_progress_is_leased_again_from_zero_progress(
    replica: Components, clock: FakeClock
) -> None:
    d = replica.dispatcher
    await d.enqueue("", spec())
    (first,) = await lease(replica)
    await d.heartbeat("", [HeartbeatItem(first.token, 40.0, "a while in")])
    await d.nack("", [NackItem(first.token, "shutting down", release=True)])
    before = await replica.runs.get(first.job.id)
    assert before is not None and before.state is JobState.QUEUED
    assert (before.progress_percent, before.progress_message) == (40.0, "a while in")
    clock.advance(1)
    now, token = clock.now_ms(), ids.new_lease_token(before.id)

    leased = await replica.runs.lease_queued(
        before.namespace, [(before.id, token)], "w", now, None, ""
    )

    expected = evolve(
        transitions.lease(before, token, "w", now, before.lease_duration_ms), lease_principal=""
    )
    assert leased == {before.id: expected}
    assert (expected.progress_percent, expected.progress_message) == (0.0, "")
    assert expected.last_error == before.last_error


async def test_the_one_statement_lease_takes_only_plainly_queued_jobs_of_its_namespace(
    replica: Components, clock: FakeClock
) -> None:
    d = replica.dispatcher
    held = (await d.enqueue("", spec())).job
    await lease(replica)
    plain = (await d.enqueue("", spec())).job
    later = (await d.enqueue("", spec(delay_ms=60_000))).job
    cancelled = (await d.enqueue("", spec())).job
    await d.cancel("", cancelled.id, "no longer wanted")
    too_late = (await d.enqueue("", spec(start_within_ms=1000))).job
    clock.advance(2)
    jobs = (plain, held, later, cancelled, too_late)
    rows_before = {j.id: await replica.runs.get(j.id) for j in jobs}
    grants = [(j.id, ids.new_lease_token(j.id)) for j in jobs]
    ns, now = plain.namespace, clock.now_ms()

    from_elsewhere = await replica.runs.lease_queued("elsewhere", grants, "w", now, None, "")

    assert from_elsewhere == {}
    for job_id, row in rows_before.items():
        assert await replica.runs.get(job_id) == row
    leased = await replica.runs.lease_queued(ns, grants, "w", now, None, "")
    assert set(leased) == {plain.id}
    for job_id, row in rows_before.items():
        if job_id != plain.id:
            assert await replica.runs.get(job_id) == row


async def test_a_lease_that_picks_a_job_past_its_start_deadline_dead_letters_it_and_leases_the_rest(
    replica: Components, clock: FakeClock
) -> None:
    d = replica.dispatcher
    first = (await d.enqueue("", spec(priority=Priority.HIGH))).job
    too_late = (await d.enqueue("", spec(priority=Priority.HIGH, start_within_ms=1000))).job
    last = (await d.enqueue("", spec(priority=Priority.LOW))).job
    clock.advance(2)

    granted = await lease(replica, n=3)

    assert [g.job.id for g in granted] == [first.id, last.id]  # best first, as Redis picked
    for g in granted:
        row = await replica.runs.get(g.job.id)
        assert row is not None
        assert (row.state, row.lease_token, row.attempt) == (JobState.LEASED, g.token, 1)
    expired = await d.get("", too_late.id)
    assert (expired.state, expired.terminal_reason, expired.attempt) == (
        JobState.DEAD_LETTERED,
        TerminalReason.START_DEADLINE_EXCEEDED,
        0,
    )
    assert await lease(replica, n=3) == []  # nothing left behind in the index


async def test_the_one_statement_lease_reaches_rows_by_primary_key_only(
    replica: Components, clock: FakeClock
) -> None:
    """Not through the state index, which would visit every queued row."""
    for _ in range(20):  # enough rows that reading them all costs more than an index
        await replica.dispatcher.enqueue_batch("", [spec() for _ in range(100)])
    ns = (await replica.dispatcher.enqueue("", spec())).job.namespace
    picked = [j.id for j in await replica.runs.live_in_queue(ns, "q", 20)]
    tokens = [ids.new_lease_token(i) for i in picked]
    async with replica.runs.engine.connect() as conn:
        await conn.execute(text("ANALYZE runs"))  # the planner sees 2,000 queued rows
        await conn.commit()
    statement = replica.runs.lease_queued_statement(
        ns, list(zip(picked, tokens, strict=True)), "w", clock.now_ms(), None, ""
    )

    plan = await query_plan(replica, *statement)

    dialect = replica.runs.engine.dialect.name
    assert PRIMARY_KEY_INDEX[dialect] in plan
    assert "ix_runs_state_queue" not in plan
