"""Pause and resume, back-pressure, and the idempotency window."""

from __future__ import annotations

import pytest

from dispatcher.app import Components
from dispatcher.clock import FakeClock
from dispatcher.domain.errors import AlreadyExists, InvalidArgument, QueueFull
from dispatcher.domain.limits import DAY_MS
from tests.backends import Backend
from tests.service.helpers import lease, spec


async def test_a_paused_queue_grants_no_leases_on_any_replica_but_still_takes_jobs(
    replica: Components, backend: Backend, clock: FakeClock
) -> None:
    other = backend.components(clock)
    await other.reconciler.ensure_index()
    await replica.queues.pause("", "q")
    job = (await replica.dispatcher.enqueue("", spec())).job  # enqueue still works
    assert await lease(replica) == [] and await lease(other) == []
    (q,) = (await replica.admin.list_queues("", 0, "")).items
    assert q.paused and q.priorities[2].queued == 1
    await other.queues.resume("", "q")
    assert [g.job.id for g in await lease(replica)] == [job.id]


async def test_a_paused_queue_stays_paused_after_a_redis_wipe(
    replica: Components, backend: Backend, clock: FakeClock
) -> None:
    await replica.queues.pause("", "q")
    await replica.dispatcher.enqueue("", spec())
    await backend.wipe_redis()
    fresh = backend.components(clock)
    await fresh.reconciler.ensure_index()
    assert await lease(fresh) == []


async def test_past_its_maximum_depth_a_queue_refuses_enqueue_with_a_retry_hint_and_writes_nothing(
    replica: Components,
) -> None:
    await replica.queues.set_max_depth("", "q", 3)
    await replica.dispatcher.enqueue_batch("", [spec(), spec()])
    results = await replica.dispatcher.enqueue_batch("", [spec(), spec(), spec(queue="other")])
    assert isinstance(results[0], QueueFull) and isinstance(results[1], QueueFull)
    assert results[0].retry_after_ms > 0
    assert not isinstance(results[2], Exception)  # other queues are not held back
    assert await replica.runs.count_by_state() == {"queued": 3}
    await replica.dispatcher.enqueue("", spec())  # one more still fits
    with pytest.raises(QueueFull):
        await replica.dispatcher.enqueue("", spec())
    await lease(replica, n=2)  # leased jobs no longer count toward the depth
    await replica.dispatcher.enqueue_batch("", [spec(), spec()])
    with pytest.raises(InvalidArgument):
        await replica.queues.set_max_depth("", "q", -1)


async def test_the_same_key_with_another_payload_is_refused_and_writes_nothing(
    replica: Components,
) -> None:
    first = await replica.dispatcher.enqueue("", spec(idempotency_key="k", payload=b"a"))
    with pytest.raises(AlreadyExists) as info:
        await replica.dispatcher.enqueue("", spec(idempotency_key="k", payload=b"b"))
    assert info.value.metadata["job_id"] == first.job.id
    assert await replica.runs.count_by_state() == {"queued": 1}


async def test_a_key_returns_the_finished_job_with_its_result_inside_the_window_only(
    replica: Components, clock: FakeClock
) -> None:
    first = await replica.dispatcher.enqueue("", spec(idempotency_key="k"))
    (g,) = await lease(replica)
    from tests.service.helpers import ack

    await ack(replica, g.token, b"done")
    clock.advance((DAY_MS - 1000) / 1000)
    again = await replica.dispatcher.enqueue("", spec(idempotency_key="k"))
    assert (again.created, again.job.id, again.job.result) == (False, first.job.id, b"done")
    clock.advance(2)
    fresh = await replica.dispatcher.enqueue("", spec(idempotency_key="k", payload=b"new"))
    assert fresh.created and fresh.job.id != first.job.id
    assert (
        await replica.dispatcher.enqueue("", spec(idempotency_key="k", payload=b"new"))
    ).job.id == fresh.job.id


async def test_a_key_past_its_window_twice_in_one_batch_creates_one_new_job(
    replica: Components, clock: FakeClock
) -> None:
    old = await replica.dispatcher.enqueue("", spec(idempotency_key="k"))
    clock.advance(DAY_MS / 1000 + 1)
    results = await replica.dispatcher.enqueue_batch(
        "", [spec(idempotency_key="k", payload=b"n"), spec(idempotency_key="k", payload=b"n")]
    )
    first, second = (r.job for r in results)  # type: ignore[union-attr]
    assert first.id == second.id != old.job.id
    assert [r.created for r in results] == [True, False]  # type: ignore[union-attr]
    assert (await replica.runs.get(old.job.id)).idempotency_key is None  # type: ignore[union-attr]
    assert await replica.runs.count_by_state() == {"queued": 2}
