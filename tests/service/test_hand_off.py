"""A job enqueued while a Lease waits on this replica is handed to it outright
(`service/handoff.py`): inserted already LEASED, its lease recorded in Redis
while the insert runs, no lease script, no second statement. The lease is as
fenced as any other; jobs the general path must judge (paused or limited
queues, concurrency keys, taken keys) still take it, also when the pause is
only seen in Redis; and a waiter that leaves meanwhile gives its job back at
once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dispatcher.app import Components
from dispatcher.clock import FakeClock
from dispatcher.domain.errors import LeaseExpired, Unavailable
from dispatcher.domain.models import AckItem, HeartbeatItem, JobState
from dispatcher.service import dispatch
from tests.backends import Backend
from tests.service.helpers import ack, lease, parked, record_lease_scripts, spec, two_replicas


def _waiting_poll(c: Components, **kw: Any) -> asyncio.Task[Any]:
    return asyncio.create_task(lease(c, wait_ms=60_000, **kw))


def _record_hand_offs(c: Components) -> list[list[str]]:
    """The job ids of every hand-off write to Redis from now on."""
    calls: list[list[str]] = []
    real_hand_off = c.index.hand_off

    async def recorded(jobs: Any) -> Any:
        calls.append([j.id for j in jobs])
        return await real_hand_off(jobs)

    c.index.hand_off = recorded  # type: ignore[method-assign]
    return calls


async def test_a_job_enqueued_while_a_lease_waits_is_handed_over_already_leased(
    replica: Components, clock: FakeClock
) -> None:
    poll = _waiting_poll(replica, worker="w7")
    await parked(replica)
    scripts = record_lease_scripts(replica.index)
    enqueued = await replica.dispatcher.enqueue("", spec(payload=b"hi"))
    (granted,) = await asyncio.wait_for(poll, timeout=30)
    assert granted.job.id == enqueued.job.id and granted.job.payload == b"hi"
    assert scripts == []  # no lease script: the waiter was handed the job
    row = await replica.runs.get(granted.job.id)
    assert row is not None
    assert (row.state, row.attempt, row.version) == (JobState.LEASED, 1, 2)
    assert (row.lease_token, row.lease_holder) == (granted.token, "w7")
    assert row.lease_expires_ms == granted.expire_ms == clock.now_ms() + row.lease_duration_ms
    history = await replica.runs.events_after({granted.job.id: 0})
    assert [(t.version, t.state, t.attempt) for t in history] == [
        (1, JobState.QUEUED, 0),
        (2, JobState.LEASED, 1),
    ]
    # The lease is a lease like any other: it renews, and its Ack ends the job.
    (renewed,) = await replica.dispatcher.heartbeat("", [HeartbeatItem(granted.token)])
    assert not isinstance(renewed, Exception)
    await ack(replica, granted.token, b"done")
    done = await replica.runs.get(granted.job.id)
    assert done is not None and (done.state, done.result) == (JobState.SUCCEEDED, b"done")


async def test_the_lease_is_recorded_in_redis_while_the_insert_runs(
    replica: Components,
) -> None:
    real_insert, real_hand_off = replica.runs.insert_committed, replica.index.hand_off
    committed = asyncio.Event()

    async def insert(*args: Any, **kwargs: Any) -> Any:
        inserted = await real_insert(*args, **kwargs)
        committed.set()
        return inserted

    async def hand_off_after_the_commit(jobs: Any) -> Any:  # a Redis slower than SQL
        await committed.wait()
        return await real_hand_off(jobs)

    replica.runs.insert_committed = insert  # type: ignore[method-assign]
    replica.index.hand_off = hand_off_after_the_commit  # type: ignore[method-assign]
    poll = _waiting_poll(replica)
    await parked(replica)
    # Were the Redis write made first, it would wait here for a commit that follows it.
    job = (await asyncio.wait_for(replica.dispatcher.enqueue("", spec()), timeout=30)).job
    (granted,) = await asyncio.wait_for(poll, timeout=30)
    assert granted.job.id == job.id
    leased = await replica.index.client.zrange(replica.index.keys.leased("default", "q"), 0, -1)
    assert leased == [job.id]


async def test_a_handed_lease_that_is_not_renewed_expires_and_its_token_is_refused(
    replica: Components, clock: FakeClock
) -> None:
    poll = _waiting_poll(replica)
    await parked(replica)
    await replica.dispatcher.enqueue("", spec())
    (first,) = await asyncio.wait_for(poll, timeout=30)
    clock.advance(first.job.lease_duration_ms / 1000 + 1)
    await replica.reaper.run_once(clock.now_ms())
    (again,) = await lease(replica)
    assert (again.job.id, again.job.attempt) == (first.job.id, 2)
    with pytest.raises(LeaseExpired):
        await replica.dispatcher.ack("", [AckItem(first.token, b"late")])


@pytest.mark.parametrize(
    "limits",
    [
        pytest.param({"max_concurrency": 5}, id="concurrency"),
        pytest.param({"rate_per_s": 100, "burst": 5}, id="rate"),
        pytest.param({"key_max_concurrency": 2}, id="key-concurrency"),
    ],
)
async def test_a_queue_with_limits_takes_the_general_path(
    replica: Components, limits: dict[str, float]
) -> None:
    await replica.queues.set_limits("", "q", limits)
    poll = _waiting_poll(replica)
    await parked(replica)
    scripts = record_lease_scripts(replica.index)
    job = (await replica.dispatcher.enqueue("", spec())).job
    (granted,) = await asyncio.wait_for(poll, timeout=30)
    assert (granted.job.id, scripts) == (job.id, ["q"])  # through lease.lua, which applies them


async def test_a_paused_queue_hands_nothing_over_until_it_is_resumed(
    replica: Components,
) -> None:
    await replica.queues.pause("", "q")
    poll = _waiting_poll(replica)
    await parked(replica)
    hand_offs = _record_hand_offs(replica)
    job = (await replica.dispatcher.enqueue("", spec())).job
    assert hand_offs == []  # this replica's settings show the pause: nothing was offered
    await parked(replica)  # the pause holds the job back, whether or not it looked again
    row = await replica.runs.get(job.id)
    assert row is not None and (row.state, row.version) == (JobState.QUEUED, 1)
    assert not poll.done()
    await replica.queues.resume("", "q")
    replica.waiters.notify(("default", "q"))
    (granted,) = await asyncio.wait_for(poll, timeout=30)
    assert granted.job.id == job.id


async def test_a_job_redis_refuses_for_a_pause_made_through_another_replica_is_given_back(
    backend: Backend, clock: FakeClock
) -> None:
    here, there = await two_replicas(backend, clock)
    poll = _waiting_poll(here)
    await parked(here)
    await there.queues.pause("", "q")  # `here` has not read the settings since
    hand_offs = _record_hand_offs(here)
    job = (await here.dispatcher.enqueue("", spec())).job
    assert hand_offs == [[job.id]]  # offered, and refused by hand_off.lua
    back = await here.runs.get(job.id)
    assert back is not None
    assert (back.state, back.attempt, back.version) == (JobState.QUEUED, 0, 3)  # no attempt used
    history = await here.runs.events_after({job.id: 0})
    assert [t.state for t in history] == [JobState.QUEUED, JobState.LEASED, JobState.QUEUED]
    assert await here.index.client.zcard(here.index.keys.leased("default", "q")) == 0
    await parked(here)  # the waiter was released, and the pause holds the job back
    assert not poll.done()
    await there.queues.resume("", "q")
    here.waiters.notify(("default", "q"))
    (granted,) = await asyncio.wait_for(poll, timeout=30)
    assert (granted.job.id, granted.job.attempt) == (job.id, 1)


async def test_a_job_with_a_concurrency_key_takes_the_general_path(replica: Components) -> None:
    poll = _waiting_poll(replica)
    await parked(replica)
    scripts = record_lease_scripts(replica.index)
    job = (await replica.dispatcher.enqueue("", spec(concurrency_key="tenant-1"))).job
    (granted,) = await asyncio.wait_for(poll, timeout=30)
    assert (granted.job.id, scripts) == (job.id, ["q"])


async def test_a_waiter_that_leaves_before_the_insert_commits_has_its_job_given_back(
    replica: Components,
) -> None:
    real_insert, inserting, go_on = replica.runs.insert_committed, asyncio.Event(), asyncio.Event()

    async def slow_insert(*args: Any, **kwargs: Any) -> Any:  # fault injection: a slow commit
        inserting.set()
        await go_on.wait()
        return await real_insert(*args, **kwargs)

    poll = _waiting_poll(replica)
    await parked(replica)
    replica.runs.insert_committed = slow_insert  # type: ignore[method-assign]
    enqueue = asyncio.create_task(replica.dispatcher.enqueue("", spec()))
    await inserting.wait()  # the waiter is claimed and its lease recorded in Redis
    poll.cancel()  # its worker went away
    with pytest.raises(asyncio.CancelledError):
        await poll
    go_on.set()
    job = (await enqueue).job
    back = await replica.runs.get(job.id)
    assert back is not None
    assert (back.state, back.attempt) == (JobState.QUEUED, 0)  # given back, no attempt used
    (again,) = await lease(replica)
    assert again.job.id == job.id


async def test_a_failed_insert_withdraws_the_hand_off_and_the_waiter_waits_on(
    replica: Components,
) -> None:
    real_insert = replica.runs.insert_committed
    failing = True

    async def insert(*args: Any, **kwargs: Any) -> Any:  # fault injection: the database is down
        if failing:
            raise Unavailable("the database is down")
        return await real_insert(*args, **kwargs)

    replica.runs.insert_committed = insert  # type: ignore[method-assign]
    poll = _waiting_poll(replica)
    await parked(replica)
    with pytest.raises(Unavailable):
        await replica.dispatcher.enqueue("", spec())
    leased_key = replica.index.keys.leased("default", "q")
    assert await replica.index.client.zcard(leased_key) == 0  # nothing left behind in Redis
    assert not poll.done()
    failing = False
    await parked(replica)
    job = (await replica.dispatcher.enqueue("", spec())).job
    (granted,) = await asyncio.wait_for(poll, timeout=30)
    assert granted.job.id == job.id


async def test_an_enqueue_whose_redis_write_breaks_still_succeeds_and_gives_its_job_back(
    replica: Components,
) -> None:
    async def broken_hand_off(jobs: Any) -> Any:  # fault injection: a bug, not a Redis error
        raise RuntimeError("bug in the hand-off write")

    replica.index.hand_off = broken_hand_off  # type: ignore[method-assign]
    poll = _waiting_poll(replica)
    await parked(replica)
    job = (await replica.dispatcher.enqueue("", spec())).job  # committed: the call succeeds
    (granted,) = await asyncio.wait_for(poll, timeout=30)  # the general path delivers it
    assert granted.job.id == job.id
    # Given back (version 3, no attempt used) before that lease. Read from the
    # history: the waiting poll may lease the job again before the row can be read.
    history = await replica.runs.events_after({job.id: 0})
    assert [(t.version, t.state, t.attempt) for t in history] == [
        (1, JobState.QUEUED, 0),
        (2, JobState.LEASED, 1),
        (3, JobState.QUEUED, 0),
        (4, JobState.LEASED, 1),
    ]


async def test_a_taken_idempotency_key_hands_nothing_over(replica: Components) -> None:
    first = (await replica.dispatcher.enqueue("", spec(idempotency_key="k1"))).job
    (held,) = await lease(replica)
    await ack(replica, held.token)
    poll = _waiting_poll(replica)
    await parked(replica)
    again = await replica.dispatcher.enqueue("", spec(idempotency_key="k1"))
    assert (again.job.id, again.created) == (first.id, False)
    leased_key = replica.index.keys.leased("default", "q")
    assert await replica.index.client.zcard(leased_key) == 0
    await parked(replica)  # the waiter was released and waits on
    job = (await replica.dispatcher.enqueue("", spec())).job
    (granted,) = await asyncio.wait_for(poll, timeout=30)
    assert granted.job.id == job.id


async def test_a_waiter_whose_hand_off_fails_looks_at_once_for_a_job_it_was_woken_for_meanwhile(
    backend: Backend, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dispatch, "RECHECK_S", 60.0)  # no backstop look within the test
    here, there = await two_replicas(backend, clock)
    real_insert, inserting, go_on = here.runs.insert_committed, asyncio.Event(), asyncio.Event()

    async def failing_insert(*args: Any, **kwargs: Any) -> Any:  # fault injection
        inserting.set()
        await go_on.wait()
        raise Unavailable("the database went away")

    poll = _waiting_poll(here)
    await parked(here)
    here.runs.insert_committed = failing_insert  # type: ignore[method-assign]
    handed = asyncio.create_task(here.dispatcher.enqueue("", spec()))
    await inserting.wait()  # the poll is claimed for that job
    other = (await there.dispatcher.enqueue("", spec())).job  # another replica's job
    here.waiters.notify(("default", "q"), 1)  # its wake-up, as the listener delivers it
    go_on.set()
    with pytest.raises(Unavailable):
        await handed
    here.runs.insert_committed = real_insert  # type: ignore[method-assign]
    (granted,) = await asyncio.wait_for(poll, timeout=30)
    assert granted.job.id == other.id
