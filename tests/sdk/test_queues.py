"""Queue control through the SDK: pause and resume, back-pressure limits."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from worker_sdk import Client, QueueLimits, ResourceExhausted, RetryOptions
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2 as pb


async def _lease_count(client: Client) -> int:
    reply = await client.raw.Lease(
        pb.LeaseRequest(worker_id="w", queues=["q"], max_jobs=10), timeout=5
    )
    return len(reply.leases)


async def test_a_paused_queue_takes_jobs_but_grants_no_lease_until_resumed(
    client: Client,
) -> None:
    await client.queues.pause("q")
    await client.enqueue("q", "t", {})
    assert await _lease_count(client) == 0
    await client.queues.resume("q")
    assert await _lease_count(client) == 1


async def test_past_its_max_depth_a_queue_refuses_enqueues_with_a_retry_hint(
    client: Client,
) -> None:
    await client.queues.set_limits("q", QueueLimits(max_depth=1))
    await client.enqueue("q", "t", {})
    async with Client(replace(client.options, retry=RetryOptions(max_attempts=1))) as once:
        with pytest.raises(ResourceExhausted) as caught:
            await once.enqueue("q", "t", {})
    assert caught.value.reason == "QUEUE_FULL"
    assert caught.value.retry_after is not None and caught.value.retry_after > timedelta(0)
