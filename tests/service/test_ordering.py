"""Lease order: higher priority first, FIFO within a level, queues in the order listed."""

from __future__ import annotations

from dispatcher.app import Components
from dispatcher.domain.models import Priority
from tests.service.helpers import lease, spec


async def test_higher_priorities_are_leased_first_and_each_level_is_fifo(
    replica: Components,
) -> None:
    order = [
        Priority.LOW,
        Priority.DEFAULT,
        Priority.CRITICAL,
        Priority.HIGH,
        Priority.LOW,
        Priority.CRITICAL,
        Priority.DEFAULT,
        Priority.HIGH,
    ]
    ids = {}
    for i, p in enumerate(order):
        out = await replica.dispatcher.enqueue("", spec(priority=p, payload=str(i).encode()))
        ids[out.job.id] = (p, i)
    granted = await lease(replica, n=100)
    seen = [ids[g.job.id] for g in granted]
    assert seen == sorted(seen, key=lambda pi: (pi[0], pi[1]))
    assert len(seen) == len(order)


async def test_fifo_holds_within_one_batch_and_across_batches(replica: Components) -> None:
    first = await replica.dispatcher.enqueue_batch(
        "", [spec(payload=bytes([i])) for i in range(50)]
    )
    second = await replica.dispatcher.enqueue_batch(
        "", [spec(payload=bytes([i])) for i in range(50)]
    )
    expected = [r.job.id for r in [*first, *second]]  # type: ignore[union-attr]
    granted = []
    while batch := await lease(replica, n=7):
        granted += [g.job.id for g in batch]
    assert granted == expected


async def test_a_worker_takes_queues_in_the_order_it_lists_them(replica: Components) -> None:
    low_first = await replica.dispatcher.enqueue("", spec(queue="b", priority=Priority.CRITICAL))
    a1 = await replica.dispatcher.enqueue("", spec(queue="a", priority=Priority.LOW))
    a2 = await replica.dispatcher.enqueue("", spec(queue="a", priority=Priority.LOW))
    granted = await lease(replica, queues=["a", "b"], n=3)
    assert [g.job.id for g in granted] == [a1.job.id, a2.job.id, low_first.job.id]


async def test_queues_of_different_namespaces_are_separate(replica: Components) -> None:
    await replica.dispatcher.enqueue("tenant-a", spec())
    from dispatcher.domain.models import LeaseRequest

    other = await replica.dispatcher.lease(LeaseRequest("tenant-b", "w", ["q"], 10, 0, None))
    mine = await replica.dispatcher.lease(LeaseRequest("tenant-a", "w", ["q"], 10, 0, None))
    assert other == []
    assert len(mine) == 1
