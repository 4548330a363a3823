"""Per-namespace quotas answer RESOURCE_EXHAUSTED and leave other namespaces alone."""

from __future__ import annotations

import pytest

from dispatcher.app import Components
from dispatcher.clock import FakeClock
from dispatcher.domain.errors import InvalidArgument, QuotaExceeded
from dispatcher.domain.models import LeaseRequest
from tests.service.helpers import spec


async def test_an_enqueue_rate_quota_refuses_a_burst_past_it_until_tokens_refill(
    replica: Components, clock: FakeClock
) -> None:
    await replica.quotas.set("tenant", {"enqueue_rate_per_s": 10, "enqueue_burst": 5})
    await replica.dispatcher.enqueue_batch("tenant", [spec()] * 5)
    with pytest.raises(QuotaExceeded) as info:
        await replica.dispatcher.enqueue("tenant", spec())
    assert info.value.retry_after_ms > 0
    await replica.dispatcher.enqueue("other", spec())  # another namespace is not held back
    clock.advance(0.1)
    await replica.dispatcher.enqueue("tenant", spec())
    assert await replica.runs.count_by_state() == {"queued": 7}


async def test_a_live_job_quota_counts_unfinished_jobs(replica: Components) -> None:
    await replica.quotas.set("tenant", {"max_live_jobs": 3})
    await replica.dispatcher.enqueue_batch("tenant", [spec()] * 3)
    with pytest.raises(QuotaExceeded):
        await replica.dispatcher.enqueue_batch("tenant", [spec()])
    assert await replica.runs.count_by_state() == {"queued": 3}


async def test_a_lease_quota_caps_concurrent_leases_in_a_namespace(replica: Components) -> None:
    await replica.quotas.set("tenant", {"max_leases": 2})
    await replica.dispatcher.enqueue_batch("tenant", [spec()] * 5)
    granted = await replica.dispatcher.lease(LeaseRequest("tenant", "w", ["q"], 5, 0, None))
    assert len(granted) == 2
    with pytest.raises(QuotaExceeded):
        await replica.dispatcher.lease(LeaseRequest("tenant", "w", ["q"], 5, 0, None))
    with pytest.raises(InvalidArgument):
        await replica.quotas.set("tenant", {"max_leases": -1})
