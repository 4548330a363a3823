"""Lease is a long-poll: it answers as soon as a job is ready on any replica."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from dispatcher.app import Components
from dispatcher.clock import FakeClock
from dispatcher.domain.models import GrantedLease, JobState, LeaseRequest
from dispatcher.service import dispatch, listener
from dispatcher.service.wakeups import Waiter
from dispatcher.store.redis.keys import Keys
from tests.backends import Backend
from tests.service.helpers import lease, record_lease_scripts, spec, two_replicas


async def test_a_waiting_lease_wakes_when_another_replica_enqueues(
    backend: Backend, clock: FakeClock
) -> None:
    a, b = await two_replicas(backend, clock)
    listening = asyncio.create_task(listener.listen_forever(b.index, b.waiters, b.hub, b.state))
    try:
        waiting = asyncio.create_task(lease(b, wait_ms=20_000))
        while b.waiters.count() == 0:  # the poll is parked
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # and the subscription is live
        job = (await a.dispatcher.enqueue("", spec())).job
        granted = await asyncio.wait_for(waiting, timeout=10)
        assert [g.job.id for g in granted] == [job.id]
    finally:
        b.state.start_draining()
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)


async def test_an_empty_long_poll_answers_empty_when_its_wait_ends(
    backend: Backend, clock: FakeClock
) -> None:
    c = backend.components(clock)
    await c.reconciler.ensure_index()
    started = time.monotonic()
    assert await lease(c, wait_ms=300) == []
    assert time.monotonic() - started >= 0.3


async def test_draining_ends_waiting_long_polls_with_an_empty_answer(
    backend: Backend, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dispatch, "RECHECK_S", 60.0)  # ended by draining, not by a backstop look
    c = backend.components(clock)
    await c.reconciler.ensure_index()
    waiting = asyncio.create_task(lease(c, wait_ms=20_000))
    while c.waiters.count() == 0:
        await asyncio.sleep(0.01)
    c.state.start_draining()
    assert await asyncio.wait_for(waiting, timeout=5) == []


async def test_sixteen_waiting_pollers_and_one_job_give_it_to_exactly_one(
    backend: Backend, clock: FakeClock
) -> None:
    c = backend.components(clock)
    await c.reconciler.ensure_index()
    polls = [asyncio.create_task(lease(c, worker=f"w{i}", wait_ms=1500)) for i in range(16)]
    while c.waiters.count() < 16:
        await asyncio.sleep(0.01)
    job = (await c.dispatcher.enqueue("", spec())).job
    results = await asyncio.gather(*polls)
    winners = [g.job.id for r in results for g in r]
    assert winners == [job.id]


async def test_a_long_poll_cancelled_while_leasing_gives_its_jobs_back_at_once(
    replica: Components,
) -> None:
    job = (await replica.dispatcher.enqueue("", spec(max_attempts=1))).job
    real_lease, in_lease, go_on = replica.index.lease, asyncio.Event(), asyncio.Event()

    async def slow_lease(*args: Any, **kwargs: Any) -> Any:  # fault injection: a slow Redis
        in_lease.set()
        await go_on.wait()
        return await real_lease(*args, **kwargs)

    replica.index.lease = slow_lease  # type: ignore[method-assign]
    poll = asyncio.create_task(replica.dispatcher.lease(LeaseRequest("", "w", ["q"], 1, 0, None)))
    await in_lease.wait()
    poll.cancel()  # the worker went away mid-lease
    go_on.set()
    with pytest.raises(asyncio.CancelledError):
        await poll
    back = await replica.runs.get(job.id)
    assert back is not None
    assert (back.state, back.attempt) == (JobState.QUEUED, 0)
    (again,) = await lease(replica)
    assert again.job.id == job.id


async def _through_the_subscription(c: Components) -> None:
    """Return once this replica's listener has handled a wake-up published now, and
    so every message published before it (one subscription delivers in order)."""
    sentinel = ("default", "sentinel")
    with c.waiters.waiting([sentinel]) as seen:
        while not seen.is_set():  # published again until the subscription is live
            await c.index.client.publish(c.index.keys.wake_channel(), Keys.queue_ref(*sentinel))
            await seen.wait(0.2)


async def test_one_new_job_wakes_one_of_sixteen_waiting_polls_and_its_echo_wakes_none(
    replica: Components,
) -> None:
    c = replica
    listening = asyncio.create_task(listener.listen_forever(c.index, c.waiters, c.hub, c.state))
    looks = record_lease_scripts(c.index)
    polls = [asyncio.create_task(lease(c, worker=f"w{i}", wait_ms=60_000)) for i in range(16)]
    try:
        while len(looks) < 16:  # each poll has looked once and is parked
            await asyncio.sleep(0.01)
        await _through_the_subscription(c)
        looks.clear()
        # A concurrency key keeps the job from being handed to a poll outright
        # (tests/service/test_hand_off.py): it is woken for, as a paused queue's is.
        job = (await c.dispatcher.enqueue("", spec(concurrency_key="k"))).job
        done, pending = await asyncio.wait(polls, return_when=asyncio.FIRST_COMPLETED)
        await _through_the_subscription(c)  # the enqueue's own wake-up has come back
        await _through_the_subscription(c)  # and a poll it woke would have looked by now
        assert [g.job.id for g in done.pop().result()] == [job.id]
        assert (len(looks), len(pending)) == (1, 15)
    finally:
        c.state.start_draining()
        await asyncio.gather(*polls)
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)


async def test_a_woken_poll_that_goes_away_before_looking_passes_the_job_on(
    replica: Components, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dispatch, "RECHECK_S", 60.0)  # no backstop look within the test
    first = asyncio.create_task(lease(replica, worker="w1", wait_ms=60_000))
    while replica.waiters.count() < 1:
        await asyncio.sleep(0.01)
    second = asyncio.create_task(lease(replica, worker="w2", wait_ms=60_000))
    while replica.waiters.count() < 2:
        await asyncio.sleep(0.01)
    hand = Waiter.hand

    def hand_and_leave(waiter: Waiter, granted: GrantedLease) -> bool:
        handed = hand(waiter, granted)
        first.cancel()  # the longest waiting poll got the job, and its worker went away
        return handed

    monkeypatch.setattr(Waiter, "hand", hand_and_leave)
    job = (await replica.dispatcher.enqueue("", spec())).job
    (granted,) = await asyncio.wait_for(second, timeout=30)
    assert granted.job.id == job.id
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_a_poll_woken_for_one_of_its_queues_looks_there_only(replica: Components) -> None:
    looked_at = record_lease_scripts(replica.index)
    poll = asyncio.create_task(lease(replica, queues=["a", "b", "c"], wait_ms=60_000))
    while len(looked_at) < 3:  # the first look covers every queue
        await asyncio.sleep(0.01)
    assert looked_at == ["a", "b", "c"]
    # Not handed over outright (a concurrency key): the poll is woken and looks.
    job = (await replica.dispatcher.enqueue("", spec(queue="b", concurrency_key="k"))).job
    (granted,) = await asyncio.wait_for(poll, timeout=30)
    assert (granted.job.id, looked_at) == (job.id, ["a", "b", "c", "b"])
