"""StreamUpdates: current state first, then every transition, no gap, no duplicate."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from dispatcher.app import Components
from dispatcher.clock import FakeClock
from dispatcher.domain.errors import InvalidArgument, JobNotFound
from dispatcher.domain.models import Enqueued, JobState, JobUpdate, StreamRequest
from dispatcher.service import listener, updates
from dispatcher.service.updates import Subscription
from dispatcher.store.redis.index import Subscriber
from tests.service.helpers import ack, lease, nack, spec


async def _collect(c: Components, req: StreamRequest, into: list[JobUpdate]) -> None:
    async for u in c.streams.follow(req):
        into.append(u)


async def test_a_stream_sends_the_current_state_then_each_transition_and_ends_at_terminal(
    replica: Components, clock: FakeClock
) -> None:
    listening = asyncio.create_task(
        listener.listen_forever(replica.index, replica.waiters, replica.hub, replica.state)
    )
    try:
        job = (await replica.dispatcher.enqueue("", spec(max_attempts=3))).job
        seen: list[JobUpdate] = []
        follower = asyncio.create_task(_collect(replica, StreamRequest("", [job.id], ""), seen))
        while not seen:
            await asyncio.sleep(0.01)
        (g,) = await lease(replica)
        await nack(replica, g.token, retry_after_ms=0)
        (g2,) = await lease(replica)
        await ack(replica, g2.token, b"done")
        await asyncio.wait_for(follower, timeout=10)
    finally:
        replica.state.start_draining()
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)
    assert [u.version for u in seen] == [1, 2, 3, 4, 5]
    assert [u.state for u in seen] == [
        JobState.QUEUED,
        JobState.LEASED,
        JobState.QUEUED,
        JobState.LEASED,
        JobState.SUCCEEDED,
    ]
    assert [u.attempt for u in seen] == [0, 1, 1, 2, 2]
    assert seen[0].job is not None and seen[-1].job is not None
    assert seen[-1].job.result == b"done"
    assert seen[2].error == "boom"


async def test_following_a_finished_job_sends_its_state_and_ends(replica: Components) -> None:
    job = (await replica.dispatcher.enqueue("", spec())).job
    (g,) = await lease(replica)
    await ack(replica, g.token)
    seen: list[JobUpdate] = []
    await asyncio.wait_for(_collect(replica, StreamRequest("", [job.id], ""), seen), timeout=5)
    assert [(u.state, u.version) for u in seen] == [(JobState.SUCCEEDED, 3)]


async def test_without_notices_the_poll_backstop_still_delivers_every_transition(
    replica: Components,
) -> None:
    job = (await replica.dispatcher.enqueue("", spec())).job
    seen: list[JobUpdate] = []
    follower = asyncio.create_task(_collect(replica, StreamRequest("", [job.id], ""), seen))
    while not seen:
        await asyncio.sleep(0.01)
    (g,) = await lease(replica)  # no listener task runs: only the backstop can see these
    await ack(replica, g.token)
    await asyncio.wait_for(follower, timeout=10)
    assert [u.version for u in seen] == [1, 2, 3]


async def test_following_a_queue_shows_new_jobs_and_their_transitions(
    replica: Components,
) -> None:
    listening = asyncio.create_task(
        listener.listen_forever(replica.index, replica.waiters, replica.hub, replica.state)
    )
    seen: list[JobUpdate] = []
    follower = asyncio.create_task(_collect(replica, StreamRequest("", [], "q"), seen))
    try:
        old = (await replica.dispatcher.enqueue("", spec())).job
        await asyncio.sleep(0.3)
        new = (await replica.dispatcher.enqueue("", spec())).job
        for g in await lease(replica, n=2):
            await ack(replica, g.token)
        async with asyncio.timeout(10):
            while len([u for u in seen if u.state is JobState.SUCCEEDED]) < 2:
                await asyncio.sleep(0.02)
    finally:
        follower.cancel()
        replica.state.start_draining()
        listening.cancel()
        await asyncio.gather(follower, listening, return_exceptions=True)
    for jid in (old.id, new.id):
        versions = [u.version for u in seen if u.job_id == jid]
        assert versions == [1, 2, 3]


async def test_following_an_unknown_job_or_nothing_is_an_error(replica: Components) -> None:
    with pytest.raises(JobNotFound):
        await _collect(replica, StreamRequest("", ["01M83HEKD3AA16Q5HS2VATHPWR"], ""), [])
    with pytest.raises(InvalidArgument):
        await _collect(replica, StreamRequest("", [], ""), [])


async def test_a_lease_announces_its_jobs_on_the_updates_channel_once_it_has_answered(
    replica: Components,
) -> None:
    job = (await replica.dispatcher.enqueue("", spec())).job
    await replica.index_behind.caught_up()  # the enqueue's own notice is out before we listen
    pubsub = replica.index.client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(replica.index.keys.updates_channel())
    try:
        (g,) = await lease(replica)
        await replica.dispatcher.late_notices.flush()
        announced: list[list[object]] = []
        for _ in range(5):  # the publish is done: the message is there to read
            msg = await pubsub.get_message(timeout=1.0)
            if msg is not None:
                announced = json.loads(msg["data"])
                break
    finally:
        await pubsub.aclose()
    assert announced == [[job.id, job.namespace, job.queue, g.job.version]]
    assert g.job.version == job.version + 1


async def _published(pubsub: Any, within_s: float) -> list[tuple[str, str]]:
    """The (channel, data) of every message `pubsub` receives within `within_s`."""
    got: list[tuple[str, str]] = []
    deadline = asyncio.get_running_loop().time() + within_s
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        msg = await pubsub.get_message(timeout=left)  # None also for a confirmation
        if msg is not None and msg["type"] in ("message", "pmessage"):
            got.append((msg["channel"], msg["data"]))
    return got


async def test_an_enqueue_announces_its_new_jobs_on_the_updates_channel_while_it_is_followed(
    replica: Components,
) -> None:
    parent = (await replica.dispatcher.enqueue("", spec())).job
    await replica.index_behind.caught_up()
    channel = replica.index.keys.updates_channel()
    pubsub = replica.index.client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(channel)
    try:
        # Ready, scheduled and waiting jobs: the script announces the first two,
        # the waiting one (not indexed) goes out as a notice of its own.
        results = await replica.dispatcher.enqueue_batch(
            "",
            [spec(), spec(queue="later", delay_ms=60_000), spec(depends_on=[parent.id])],
        )
        await replica.index_behind.caught_up()
        published = await _published(pubsub, within_s=0.5)
    finally:
        await pubsub.aclose()
    announced = [notice for _, data in published for notice in json.loads(data)]
    jobs = [r.job for r in results if isinstance(r, Enqueued)]
    assert sorted(announced) == sorted([[j.id, j.namespace, j.queue, j.version] for j in jobs])
    assert [j.state for j in jobs] == [JobState.QUEUED, JobState.SCHEDULED, JobState.WAITING]


async def test_an_enqueue_that_nothing_follows_publishes_no_update_notice(
    replica: Components,
) -> None:
    # A pattern subscription sees what is published without being a follower:
    # PUBSUB NUMSUB, which the script asks, counts channel subscriptions only.
    pubsub = replica.index.client.pubsub(ignore_subscribe_messages=True)
    await pubsub.psubscribe(f"{replica.index.keys.prefix}:*")
    try:
        await replica.dispatcher.enqueue_batch("", [spec(), spec()])
        await replica.index_behind.caught_up()
        published = await _published(pubsub, within_s=0.5)
    finally:
        await pubsub.aclose()
    channels = [channel for channel, _ in published]
    assert channels == [replica.index.keys.wake_channel()]  # the wake-up, and nothing else


async def _subscribers(c: Components, channel: str) -> int:
    """How many connections hold `channel` (PUBSUB NUMSUB)."""
    ((_, n),) = await c.index.client.pubsub_numsub(channel)
    return int(n)


async def _followers_of_updates(c: Components) -> int:
    """How many connections hold this replica's updates channel."""
    return await _subscribers(c, c.index.keys.updates_channel())


async def _listening(c: Components, linger_s: float) -> asyncio.Task[None]:
    """Start the listener and return once its wake-up subscription is live."""
    task = asyncio.create_task(
        listener.listen_forever(c.index, c.waiters, c.hub, c.state, linger_s=linger_s)
    )
    while await _subscribers(c, c.index.keys.wake_channel()) == 0:
        await asyncio.sleep(0.01)
    return task


async def _stop(c: Components, *tasks: asyncio.Task[None]) -> None:
    c.state.start_draining()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_replica_takes_the_updates_channel_only_while_something_follows(
    replica: Components,
) -> None:
    listening = await _listening(replica, linger_s=0)
    job = (await replica.dispatcher.enqueue("", spec())).job
    assert await _followers_of_updates(replica) == 0
    seen: list[JobUpdate] = []
    follower = asyncio.create_task(_collect(replica, StreamRequest("", [job.id], ""), seen))
    try:
        while not seen:
            await asyncio.sleep(0.01)
        assert await _followers_of_updates(replica) == 1
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
        async with asyncio.timeout(10):
            while await _followers_of_updates(replica) != 0:
                await asyncio.sleep(0.01)
    finally:
        await _stop(replica, follower, listening)


async def test_the_first_follower_starts_once_the_updates_subscription_is_live(
    replica: Components, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No poll backstop: only notices can bring the transitions.
    monkeypatch.setattr(updates, "POLL_S", 3600.0)
    listening = await _listening(replica, linger_s=0)
    job = (await replica.dispatcher.enqueue("", spec())).job
    sub = Subscription("default", frozenset([job.id]), "")
    try:
        await replica.hub.subscribe(sub)
        # Returned only after Redis confirmed: a notice published from now on reaches it.
        assert await _followers_of_updates(replica) == 1
        replica.hub.unsubscribe(sub)
        seen: list[JobUpdate] = []
        follower = asyncio.create_task(_collect(replica, StreamRequest("", [job.id], ""), seen))
        while not seen:  # its snapshot is read
            await asyncio.sleep(0.01)
        (g,) = await lease(replica)
        await ack(replica, g.token)
        await asyncio.wait_for(follower, timeout=10)
    finally:
        replica.hub.unsubscribe(sub)
        await _stop(replica, listening)
    assert [u.version for u in seen] == [1, 2, 3]


async def _notices_reach(c: Components, sub: Subscription, job_id: str) -> None:
    """Return once a notice about `job_id`, published now, has reached `sub`."""
    notice = json.dumps([[job_id, sub.namespace, "q", 0]])
    while True:
        sub.woken.clear()
        await c.index.client.publish(c.index.keys.updates_channel(), notice)
        try:
            await asyncio.wait_for(sub.woken.wait(), timeout=0.2)
            return
        except TimeoutError:
            pass


async def test_followers_still_get_notices_after_the_subscription_connection_drops(
    replica: Components, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(updates, "POLL_S", 3600.0)  # only notices bring transitions
    made: list[Subscriber] = []
    make = replica.index.subscriber

    def subscriber() -> Subscriber:
        made.append(make())
        return made[-1]

    monkeypatch.setattr(replica.index, "subscriber", subscriber)
    listening = await _listening(replica, linger_s=0)
    job = (await replica.dispatcher.enqueue("", spec())).job
    probe = Subscription("default", frozenset([job.id]), "")
    seen: list[JobUpdate] = []
    follower = asyncio.create_task(_collect(replica, StreamRequest("", [job.id], ""), seen))
    try:
        await replica.hub.subscribe(probe)
        while not seen:
            await asyncio.sleep(0.01)
        # As a Redis restart would: the connection is closed under the reader. The
        # client makes a new one by itself or the listener does; either way the
        # updates channel must be taken again.
        await made[-1]._pubsub.connection.disconnect()
        await asyncio.wait_for(_notices_reach(replica, probe, job.id), timeout=10)
        (g,) = await lease(replica)
        await ack(replica, g.token)
        await asyncio.wait_for(follower, timeout=10)
    finally:
        replica.hub.unsubscribe(probe)
        await _stop(replica, follower, listening)
    assert [u.version for u in seen] == [1, 2, 3]
