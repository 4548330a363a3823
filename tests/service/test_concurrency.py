"""64 concurrent leasers on 2 replicas: every job leased exactly once, leases never overlap."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from dispatcher.app import Components
from dispatcher.clock import FakeClock
from dispatcher.domain.models import AckItem, LeaseRequest
from tests.backends import Backend
from tests.service.helpers import spec

JOBS = 10_000
LEASERS = 64


@pytest.mark.slow
async def test_sixty_four_leasers_on_two_replicas_lease_every_job_exactly_once(
    backend: Backend, clock: FakeClock
) -> None:
    replicas = [backend.components(clock), backend.components(clock)]
    for r in replicas:
        await r.reconciler.ensure_index()
    for start in range(0, JOBS, 1000):
        await replicas[start // 1000 % 2].dispatcher.enqueue_batch(
            "", [spec(payload=str(i).encode()) for i in range(start, start + 1000)]
        )
    granted: list[str] = []
    held: set[str] = set()
    overlaps: list[str] = []

    async def leaser(n: int, replica: Components) -> None:
        while True:
            batch = await replica.dispatcher.lease(LeaseRequest("", f"w{n}", ["q"], 8, 0, None))
            if not batch:
                return
            for g in batch:
                if g.job.id in held:
                    overlaps.append(g.job.id)
                held.add(g.job.id)
                granted.append(g.job.id)
            await asyncio.sleep(0)  # let other leasers interleave while we hold leases
            for g in batch:
                held.discard(g.job.id)
            results = await replica.dispatcher.ack("", [AckItem(g.token) for g in batch])
            assert all(not isinstance(r, Exception) for r in results)

    await asyncio.gather(*(leaser(n, replicas[n % 2]) for n in range(LEASERS)))
    counts = Counter(granted)
    assert len(counts) == JOBS
    assert set(counts.values()) == {1}
    assert overlaps == []
    assert await replicas[0].runs.count_by_state() == {"succeeded": JOBS}


async def test_two_replicas_enqueueing_the_same_keys_at_once_create_each_job_once(
    backend: Backend, clock: FakeClock
) -> None:
    replicas = [backend.components(clock), backend.components(clock)]
    for r in replicas:
        await r.reconciler.ensure_index()
    keys = [f"order-{i}" for i in range(40)]

    async def producer(replica: Components) -> list[str]:
        ids = []
        for key in keys:
            out = await replica.dispatcher.enqueue("", spec(idempotency_key=key, payload=b"x"))
            ids.append(out.job.id)
        return ids

    a, b = await asyncio.gather(producer(replicas[0]), producer(replicas[1]))
    assert a == b  # both callers of each key got the same job
    assert len(set(a)) == len(keys)
    assert await replicas[0].runs.count_by_state() == {"queued": len(keys)}
