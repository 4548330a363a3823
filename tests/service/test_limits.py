"""Concurrency and rate limits, per queue and per key, enforced in Redis at lease time."""

from __future__ import annotations

from dispatcher.app import Components
from dispatcher.clock import FakeClock
from tests.backends import Backend
from tests.service.helpers import ack, lease, nack, spec


async def test_a_queue_never_has_more_leased_than_its_concurrency_limit_across_replicas(
    replica: Components, backend: Backend, clock: FakeClock
) -> None:
    other = backend.components(clock)
    await other.reconciler.ensure_index()
    await replica.queues.set_limits("", "q", {"max_concurrency": 3})
    await replica.dispatcher.enqueue_batch("", [spec()] * 10)
    first = await lease(replica, n=2)
    second = await lease(other, n=5)
    assert (len(first), len(second)) == (2, 1)
    assert await lease(replica, n=5) == []
    await ack(replica, first[0].token)
    assert len(await lease(other, n=5)) == 1


async def test_a_queue_rate_limit_grants_a_burst_then_refills_with_time(
    replica: Components, clock: FakeClock
) -> None:
    await replica.queues.set_limits("", "q", {"rate_per_s": 2, "burst": 4})
    await replica.dispatcher.enqueue_batch("", [spec()] * 20)
    assert len(await lease(replica, n=10)) == 4
    assert await lease(replica, n=10) == []
    clock.advance(1)
    assert len(await lease(replica, n=10)) == 2
    clock.advance(10)  # refills to the burst, never beyond
    assert len(await lease(replica, n=10)) == 4


async def test_each_concurrency_key_has_its_own_limit_and_others_pass_it(
    replica: Components,
) -> None:
    await replica.queues.set_limits("", "q", {"key_max_concurrency": 2})
    busy = [
        (await replica.dispatcher.enqueue("", spec(concurrency_key="tenant-a"))).job
        for _ in range(4)
    ]
    calm = (await replica.dispatcher.enqueue("", spec(concurrency_key="tenant-b"))).job
    plain = (await replica.dispatcher.enqueue("", spec())).job
    granted = await lease(replica, n=10)
    assert [g.job.id for g in granted] == [busy[0].id, busy[1].id, calm.id, plain.id]
    waiting = await replica.dispatcher.get("", busy[2].id)
    assert waiting.wait_reason == "concurrency limit of key 'tenant-a': 2 leased"
    await nack(replica, granted[0].token, retry_after_ms=0)  # back to ready, slot freed
    again = await lease(replica, n=10)
    assert [g.job.id for g in again] == [busy[0].id]


async def test_a_key_rate_limit_spaces_out_one_key_only(
    replica: Components, clock: FakeClock
) -> None:
    await replica.queues.set_limits("", "q", {"key_rate_per_s": 1, "key_burst": 1})
    await replica.dispatcher.enqueue_batch(
        "", [spec(concurrency_key="k")] * 3 + [spec(concurrency_key="j")]
    )
    assert len(await lease(replica, n=10)) == 2  # one of k, one of j
    assert await lease(replica, n=10) == []
    clock.advance(1)
    assert len(await lease(replica, n=10)) == 1


async def test_key_counts_survive_a_redis_wipe(
    replica: Components, backend: Backend, clock: FakeClock
) -> None:
    await replica.queues.set_limits("", "q", {"key_max_concurrency": 1})
    await replica.dispatcher.enqueue_batch("", [spec(concurrency_key="k")] * 2)
    (held,) = await lease(replica, n=5)
    await backend.wipe_redis()
    fresh = backend.components(clock)
    await fresh.reconciler.ensure_index()
    assert await lease(fresh, n=5) == []  # the rebuilt count still says k has one lease
    await ack(fresh, held.token)
    assert len(await lease(fresh, n=5)) == 1
