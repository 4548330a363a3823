"""StreamUpdates: current state first, then every transition, no gap, no duplicate."""

from __future__ import annotations

import asyncio
import json

import pytest

from dispatcher.app import Components
from dispatcher.clock import FakeClock
from dispatcher.domain.errors import InvalidArgument, JobNotFound
from dispatcher.domain.models import JobState, JobUpdate, StreamRequest
from dispatcher.service import listener
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
