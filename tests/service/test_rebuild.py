"""Redis is a rebuildable index: wipe it, and SQL brings every live job back."""

from __future__ import annotations

import pytest

from dispatcher.app import Components
from dispatcher.clock import FakeClock
from dispatcher.domain.errors import IndexRebuilding
from dispatcher.domain.models import HeartbeatItem, JobState, LiveEntry, Priority
from dispatcher.service.state import Phase
from tests.backends import Backend
from tests.service.helpers import ack, lease, spec


async def test_after_a_redis_wipe_every_live_job_is_delivered_in_priority_order_and_none_twice(
    replica: Components, backend: Backend, clock: FakeClock
) -> None:
    d = replica.dispatcher
    prios = [Priority.LOW, Priority.HIGH, Priority.DEFAULT, Priority.CRITICAL] * 5
    queued = [(await d.enqueue("", spec(priority=p))).job for p in prios]
    scheduled = (await d.enqueue("", spec(delay_ms=60_000))).job
    done = (await d.enqueue("", spec(queue="other"))).job
    (finished,) = await lease(replica, queues=["other"])
    await ack(replica, finished.token)
    held = (await d.enqueue("", spec(queue="held", lease_duration_ms=10_000))).job
    (live_lease,) = await lease(replica, queues=["held"])

    await backend.wipe_redis()
    fresh = backend.components(clock)  # a restarted dispatcher
    with pytest.raises(IndexRebuilding):
        await lease(fresh)
    placed = await fresh.reconciler.ensure_index()
    assert fresh.state.phase is Phase.SERVING
    assert placed == len(queued) + 2  # + scheduled + leased; the succeeded job is not indexed

    granted = await lease(fresh, n=100)
    expected = sorted(queued, key=lambda j: (j.priority, j.id))
    assert [g.job.id for g in granted] == [j.id for j in expected]
    # The live lease survived the wipe: its holder can still ack with its token.
    await ack(fresh, live_lease.token, b"ok")
    for g in granted:
        await ack(fresh, g.token)
    # The scheduled job comes due as before; the finished one never comes back.
    clock.advance(61)
    await fresh.reaper.run_once(clock.now_ms())
    assert [g.job.id for g in await lease(fresh, n=10)] == [scheduled.id]
    assert await lease(fresh, queues=["other", "held"], n=10) == []
    counts = await fresh.runs.count_by_state()
    assert counts == {"succeeded": len(queued) + 2, "leased": 1}
    assert held.id == live_lease.job.id
    assert done.state is JobState.QUEUED


async def test_the_columns_the_reconciler_reads_say_what_the_whole_rows_say(
    replica: Components,
) -> None:
    d = replica.dispatcher
    queued = (await d.enqueue("", spec(priority=Priority.HIGH, concurrency_key="k"))).job
    scheduled = (await d.enqueue("", spec(queue="later", delay_ms=60_000))).job
    await d.enqueue("", spec(queue="held", lease_duration_ms=10_000))
    (held,) = await lease(replica, queues=["held"])
    await d.enqueue("", spec(queue="done"))
    (finished,) = await lease(replica, queues=["done"])
    await ack(replica, finished.token)

    entries = await replica.runs.live_entries("", 100)

    assert [e.id for e in entries] == sorted([queued.id, scheduled.id, held.job.id])
    for entry in entries:
        job = await replica.runs.get(entry.id)
        assert job is not None
        assert entry == LiveEntry(
            job.id,
            job.namespace,
            job.queue,
            job.version,
            job.state,
            job.priority,
            job.run_at_ms,
            job.lease_expires_ms,
            job.concurrency_key,
        )
    assert [e.id for e in await replica.runs.live_entries(queued.id, 1)] == [
        min(scheduled.id, held.job.id)
    ]


async def test_an_expired_lease_is_still_reaped_after_a_wipe(
    replica: Components, backend: Backend, clock: FakeClock
) -> None:
    await replica.dispatcher.enqueue("", spec(lease_duration_ms=2000))
    (g,) = await lease(replica)
    await backend.wipe_redis()
    fresh = backend.components(clock)
    await fresh.reconciler.ensure_index()
    clock.advance(3)
    assert (await fresh.reaper.run_once(clock.now_ms())).expired == 1
    (again,) = await lease(fresh)
    assert (again.job.id, again.job.attempt) == (g.job.id, 2)


async def test_a_wipe_while_running_is_noticed_and_repaired_by_the_reconciler(
    replica: Components, backend: Backend
) -> None:
    job = (await replica.dispatcher.enqueue("", spec())).job
    await replica.index_behind.caught_up()  # the write that follows the answer
    await backend.wipe_redis()
    assert await lease(replica) == []  # the index is empty until the reconciler runs
    await replica.reconciler.run_once()
    assert [g.job.id for g in await lease(replica)] == [job.id]


async def test_the_reconciler_puts_back_a_job_whose_index_write_was_lost(
    replica: Components, backend: Backend
) -> None:
    job = (await replica.dispatcher.enqueue("", spec())).job
    await replica.index_behind.caught_up()
    await replica.index.forget("default", "q", [job.id])  # as if the Redis write never happened
    stats = await replica.reconciler.check_page()
    assert stats.repaired == 1
    assert [g.job.id for g in await lease(replica)] == [job.id]
    assert (await replica.reconciler.check_page()).repaired == 0


async def test_a_restarted_replica_first_checks_the_jobs_of_the_last_minute(
    replica: Components, backend: Backend, clock: FakeClock
) -> None:
    # An Enqueue answered and its replica died before the index write behind it.
    older = [(await replica.dispatcher.enqueue("", spec())).job for _ in range(5)]
    clock.advance(600)
    lost = (await replica.dispatcher.enqueue("", spec())).job
    await replica.index_behind.caught_up()
    await replica.index.forget("default", "q", [lost.id])

    restarted = backend.components(clock)
    restarted.reconciler.page = 2  # the older jobs alone fill more than a page
    stats = await restarted.reconciler.run_once()

    assert (stats.checked, stats.repaired) == (1, 1)
    granted = await lease(restarted, n=10)
    assert {g.job.id for g in granted} == {j.id for j in older} | {lost.id}


async def test_membership_places_each_job_of_a_mixed_page_in_its_own_queue_and_index(
    replica: Components, clock: FakeClock
) -> None:
    ready_a = (await replica.dispatcher.enqueue("", spec(queue="a"))).job
    later_b = (await replica.dispatcher.enqueue("", spec(queue="b", delay_ms=60_000))).job
    leased_b = (await replica.dispatcher.enqueue("", spec(queue="b"))).job
    ready_a2 = (await replica.dispatcher.enqueue("", spec(queue="a", priority=Priority.HIGH))).job
    (g,) = await lease(replica, queues=["b"])
    assert g.job.id == leased_b.id
    await replica.index.forget("default", "a", [ready_a2.id])
    jobs = [ready_a, later_b, g.job, ready_a2]
    found = await replica.index.membership(jobs)
    assert [where for where, _ in found] == ["r", "s", "l", "-"]
    assert found[1][1] == later_b.run_at_ms
    assert (await replica.reconciler.check_page()).repaired == 1


async def test_the_reconciler_leaves_a_lease_in_progress_alone(
    replica: Components, clock: FakeClock
) -> None:
    job = (await replica.dispatcher.enqueue("", spec())).job
    await replica.index_behind.caught_up()
    now = clock.now_ms()
    # lease.lua has moved the job; the lease's SQL commit has not happened yet.
    assert await replica.index.lease("default", "q", 1, now + 30_000, now) == [job.id]
    assert (await replica.reconciler.check_page()).repaired == 0
    ready = replica.index.keys.ready("default", "q")
    assert await replica.index.client.zscore(ready, job.id) is None


async def test_index_writes_still_land_after_redis_forgets_its_scripts(
    replica: Components, backend: Backend
) -> None:
    # A Redis restart or SCRIPT FLUSH empties the script cache; pipelined script
    # calls answer NOSCRIPT, and the index must load the scripts and run them again
    # instead of leaving the write to the reconciler.
    d = replica.dispatcher
    first = (await d.enqueue("", spec())).job
    await replica.index.client.script_flush()
    second = (await d.enqueue("", spec())).job  # enqueue.lua in a pipeline
    granted = await lease(replica, n=10)
    assert [g.job.id for g in granted] == [first.id, second.id]

    await replica.index.client.script_flush()
    await ack(replica, granted[0].token)  # place.lua and remove.lua in a pipeline
    await replica.index.client.script_flush()
    await d.heartbeat("", [HeartbeatItem(granted[1].token)])  # extend.lua in a pipeline

    assert not replica.state.repair_requested.is_set()
    leased = await replica.index.client.zrange(
        replica.index.keys.leased("default", "q"), 0, -1, withscores=True
    )
    job = await d.get("", second.id)
    assert leased == [(second.id, float(job.lease_expires_ms or 0))]
