"""Enqueue answers once its jobs are committed; their index write follows (`IndexBehind`)."""

from __future__ import annotations

import asyncio
from typing import Any

from dispatcher.app import Components
from dispatcher.clock import FakeClock
from dispatcher.domain.errors import Unavailable
from dispatcher.domain.models import JobState, Priority
from tests.service.helpers import lease, spec


class HeldWrites:
    """Holds the index's enqueue writes until `release()`, then lets them through
    to the real index (a spy, not a stand-in: every write still reaches Redis)."""

    def __init__(self, c: Components, fail: bool = False) -> None:
        self.batches: list[list[str]] = []
        self.gate = asyncio.Event()
        real = c.index.enqueue

        async def held(jobs: Any, notices: Any) -> None:
            self.batches.append([j.id for j in jobs])
            await self.gate.wait()
            if fail:
                raise Unavailable("Redis is unavailable")
            await real(jobs, notices)

        c.index.enqueue = held  # type: ignore[method-assign]

    def release(self) -> None:
        self.gate.set()


async def still_waiting(task: asyncio.Task[Any]) -> bool:
    """Whether `task` is still blocked after the event loop had time to run it."""
    for _ in range(20):
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)
    return not task.done()


async def test_enqueue_answers_before_its_index_write_and_a_lease_here_waits_for_that_write(
    replica: Components,
) -> None:
    writes = HeldWrites(replica)
    job = (await replica.dispatcher.enqueue("", spec())).job  # answered, write held
    stored = await replica.runs.get(job.id)
    assert stored is not None and stored.state is JobState.QUEUED

    leasing = asyncio.create_task(lease(replica))
    assert await still_waiting(leasing)
    writes.release()

    (g,) = await leasing
    assert g.job.id == job.id


async def test_index_writes_that_gather_while_one_is_in_flight_go_out_together(
    replica: Components,
) -> None:
    writes = HeldWrites(replica)
    first = (await replica.dispatcher.enqueue("", spec())).job
    await asyncio.sleep(0)  # the first write is on its way
    second = (await replica.dispatcher.enqueue("", spec())).job
    third = (await replica.dispatcher.enqueue("", spec())).job
    writes.release()
    await replica.index_behind.caught_up()

    assert writes.batches == [[first.id], [second.id, third.id]]
    assert {g.job.id for g in await lease(replica, n=3)} == {first.id, second.id, third.id}


async def test_a_job_cancelled_right_after_its_answer_is_not_left_in_the_index(
    replica: Components,
) -> None:
    writes = HeldWrites(replica)
    job = (await replica.dispatcher.enqueue("", spec())).job
    cancelling = asyncio.create_task(replica.dispatcher.cancel("", job.id, "changed my mind"))
    assert await still_waiting(cancelling)  # its removal waits for the write it would undo
    writes.release()

    assert (await cancelling).state is JobState.CANCELLED
    ready = replica.index.keys.ready("default", "q")
    assert await replica.index.client.zscore(ready, job.id) is None
    assert await lease(replica) == []


async def test_a_failed_index_write_asks_for_a_repair_and_the_reconciler_puts_the_job_back(
    replica: Components,
) -> None:
    writes = HeldWrites(replica, fail=True)
    job = (await replica.dispatcher.enqueue("", spec())).job  # accepted: it is committed
    writes.release()
    await replica.index_behind.caught_up()

    assert replica.state.repair_requested.is_set()
    assert await lease(replica) == []
    assert (await replica.reconciler.check_page()).repaired == 1
    assert [g.job.id for g in await lease(replica)] == [job.id]


async def test_past_its_backlog_an_enqueue_waits_for_the_index_again(
    replica: Components,
) -> None:
    writes = HeldWrites(replica)
    replica.index_behind.max_pending = 1
    await replica.dispatcher.enqueue("", spec())  # in flight, held
    await asyncio.sleep(0)
    await replica.dispatcher.enqueue("", spec())  # one job waiting: within the backlog
    third = asyncio.create_task(replica.dispatcher.enqueue("", spec()))
    assert await still_waiting(third)  # two waiting: past it
    writes.release()

    await third
    assert len(await lease(replica, n=10)) == 3


async def test_a_job_scheduled_a_moment_ahead_is_indexed_as_scheduled_when_written_with_later_ones(
    replica: Components, clock: FakeClock
) -> None:
    writes = HeldWrites(replica)
    await replica.dispatcher.enqueue("", spec())  # holds the write in flight
    await asyncio.sleep(0)
    soon = (await replica.dispatcher.enqueue("", spec(delay_ms=5))).job
    clock.advance(0.01)  # the next call is made after `soon` is due
    later = (await replica.dispatcher.enqueue("", spec())).job
    writes.release()
    await replica.index_behind.caught_up()

    assert writes.batches[1] == [soon.id, later.id]
    keys = replica.index.keys
    assert await replica.index.client.zscore(keys.ready("default", "q"), soon.id) is None
    assert await replica.index.client.zscore(keys.scheduled("default", "q"), soon.id) == (
        soon.run_at_ms
    )


async def test_a_concurrency_key_of_any_printable_characters_is_indexed_as_given(
    replica: Components,
) -> None:
    key = ' a key\\with|spaces, quotes " and ~ '
    job = (await replica.dispatcher.enqueue("", spec(concurrency_key=key))).job
    other = (await replica.dispatcher.enqueue("", spec(priority=Priority.HIGH))).job
    await replica.index_behind.caught_up()

    keys = replica.index.keys
    assert await replica.index.client.hget(keys.job_keys("default", "q"), job.id) == key
    assert await replica.index.client.hget(keys.job_keys("default", "q"), other.id) is None
    assert [g.job.id for g in await lease(replica, n=2)] == [other.id, job.id]
