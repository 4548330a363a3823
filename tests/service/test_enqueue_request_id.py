"""EnqueueBatch with a request_id: a repeat of a call creates nothing and gets
the first call's jobs, on both backends, in one process and across replicas."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from dispatcher.app import Components
from dispatcher.clock import FakeClock
from dispatcher.domain.errors import (
    InvalidArgument,
    QueueFull,
    RefusedByFirstCall,
    RequestIdReused,
)
from dispatcher.domain.limits import DAY_MS
from dispatcher.domain.models import EnqueueCall, Enqueued, JobState
from dispatcher.service.retention import RetentionSweeper
from dispatcher.store.sql.runs import CallRecorded, DuplicateKey
from tests.backends import Backend
from tests.service.helpers import lease, parked, spec, two_replicas


def _jobs(results: Sequence[object]) -> list[Enqueued]:
    """The results, each checked to be a job (not an error)."""
    jobs = [r for r in results if isinstance(r, Enqueued)]
    assert len(jobs) == len(results), results
    return jobs


async def _calls_recorded(replica: Components, *request_ids: str) -> list[EnqueueCall]:
    return await replica.runs.recorded_calls("default", list(request_ids))


async def test_a_repeated_call_creates_nothing_and_answers_with_the_first_calls_jobs(
    replica: Components,
) -> None:
    specs = [spec(payload=b"a"), spec(payload=b"b"), spec(queue="other", payload=b"c")]
    first = _jobs(await replica.dispatcher.enqueue_batch("", specs, request_id="call-1"))
    again = _jobs(await replica.dispatcher.enqueue_batch("", specs, request_id="call-1"))

    assert [r.job.id for r in again] == [r.job.id for r in first]
    assert [r.created for r in first] == [True, True, True]
    assert [r.created for r in again] == [False, False, False]
    assert await replica.runs.count_by_state() == {"queued": 3}
    assert len(await lease(replica, ["q", "other"], n=10)) == 3
    (call,) = await _calls_recorded(replica, "call-1")
    assert call.items == tuple(r.job.id for r in first)


async def test_a_repeat_answers_with_each_jobs_current_state(replica: Components) -> None:
    (first,) = _jobs(await replica.dispatcher.enqueue_batch("", [spec()], request_id="r"))
    (granted,) = await lease(replica)
    (again,) = _jobs(await replica.dispatcher.enqueue_batch("", [spec()], request_id="r"))
    assert again.job.id == first.job.id == granted.job.id
    assert again.job.state is JobState.LEASED
    assert not again.created


async def test_calls_without_a_request_id_or_with_another_one_each_create_their_jobs(
    replica: Components,
) -> None:
    for request_id in ["", "", "a", "b"]:
        await replica.dispatcher.enqueue_batch("", [spec(), spec()], request_id=request_id)
    assert await replica.runs.count_by_state() == {"queued": 8}


async def test_a_request_id_is_scoped_to_a_namespace(replica: Components) -> None:
    (a,) = _jobs(await replica.dispatcher.enqueue_batch("tenant-a", [spec()], request_id="r"))
    (b,) = _jobs(await replica.dispatcher.enqueue_batch("tenant-b", [spec()], request_id="r"))
    assert a.job.id != b.job.id
    assert a.created and b.created
    assert b.job.namespace == "tenant-b"


async def test_a_repeat_with_another_number_of_jobs_fails_whole_and_writes_nothing(
    replica: Components,
) -> None:
    await replica.dispatcher.enqueue_batch("", [spec(), spec()], request_id="r")
    with pytest.raises(RequestIdReused) as caught:
        await replica.dispatcher.enqueue_batch("", [spec(), spec(), spec()], request_id="r")
    assert caught.value.reason == "REQUEST_ID_REUSED"
    assert "2 jobs, not 3" in caught.value.message
    assert await replica.runs.count_by_state() == {"queued": 2}


async def test_a_repeat_with_another_job_at_an_item_refuses_that_item_only(
    replica: Components,
) -> None:
    first = _jobs(
        await replica.dispatcher.enqueue_batch("", [spec(payload=b"a"), spec()], request_id="r")
    )
    again = await replica.dispatcher.enqueue_batch(
        "", [spec(payload=b"changed"), spec()], request_id="r"
    )
    assert isinstance(again[0], RequestIdReused)
    assert again[0].metadata["job_id"] == first[0].job.id
    assert "jobs[0]" in again[0].message
    assert isinstance(again[1], Enqueued) and again[1].job.id == first[1].job.id
    assert await replica.runs.count_by_state() == {"queued": 2}


async def test_an_item_the_first_call_refused_is_refused_again_by_a_repeat(
    replica: Components,
) -> None:
    await replica.queues.set_max_depth("", "full", 1)
    await replica.dispatcher.enqueue("", spec(queue="full"))
    specs = [spec(), spec(queue="full"), spec(queue="bad queue!")]
    first = await replica.dispatcher.enqueue_batch("", specs, request_id="r")
    assert isinstance(first[1], QueueFull) and isinstance(first[2], InvalidArgument)

    await lease(replica, ["full"])  # the queue has room now
    again = await replica.dispatcher.enqueue_batch("", specs, request_id="r")

    assert isinstance(again[0], Enqueued) and not again[0].created
    assert again[0].job.id == first[0].job.id  # type: ignore[union-attr]
    assert isinstance(again[1], RefusedByFirstCall)
    assert again[1].reason == "REQUEST_ID_REUSED"
    assert isinstance(again[2], InvalidArgument)  # still invalid: its own error
    assert await replica.runs.count_by_state() == {"queued": 1, "leased": 1}


async def test_a_repeat_gets_the_jobs_the_first_call_made_even_where_their_queue_filled_since(
    replica: Components,
) -> None:
    await replica.queues.set_max_depth("", "q", 2)
    first = _jobs(await replica.dispatcher.enqueue_batch("", [spec(), spec()], request_id="r"))
    with pytest.raises(QueueFull):  # the queue is full now
        await replica.dispatcher.enqueue_batch("", [spec()])
    again = _jobs(await replica.dispatcher.enqueue_batch("", [spec(), spec()], request_id="r"))
    assert [(r.job.id, r.created) for r in again] == [(r.job.id, False) for r in first]


async def test_a_call_that_creates_nothing_records_nothing(replica: Components) -> None:
    bad = [spec(queue="bad queue!"), spec(type="")]
    for _ in range(2):
        out = await replica.dispatcher.enqueue_batch("", bad, request_id="r")
        assert all(isinstance(r, InvalidArgument) for r in out)
    assert await _calls_recorded(replica, "r") == []
    (made,) = _jobs(await replica.dispatcher.enqueue_batch("", [spec()], request_id="r"))
    assert made.created


async def test_past_the_idempotency_window_a_request_id_enqueues_anew(
    replica: Components, clock: FakeClock
) -> None:
    (old,) = _jobs(await replica.dispatcher.enqueue_batch("", [spec()], request_id="r"))
    clock.advance((DAY_MS - 1000) / 1000)
    (inside,) = _jobs(await replica.dispatcher.enqueue_batch("", [spec()], request_id="r"))
    clock.advance(2)
    (fresh,) = _jobs(await replica.dispatcher.enqueue_batch("", [spec()], request_id="r"))
    (repeat,) = _jobs(await replica.dispatcher.enqueue_batch("", [spec()], request_id="r"))

    assert (inside.job.id, inside.created) == (old.job.id, False)
    assert fresh.created and fresh.job.id != old.job.id
    assert (repeat.job.id, repeat.created) == (fresh.job.id, False)
    assert await replica.runs.count_by_state() == {"queued": 2}


async def test_the_retention_sweep_deletes_calls_past_the_window_and_keeps_the_rest(
    replica: Components, clock: FakeClock
) -> None:
    await replica.dispatcher.enqueue_batch("", [spec()], request_id="old")
    clock.advance(3600)
    await replica.dispatcher.enqueue_batch("", [spec()], request_id="new")
    sweeper = RetentionSweeper(replica.runs, retention_ms=DAY_MS, calls_window_ms=1800_000)

    stats = await sweeper.run_once(clock.now_ms())

    assert stats.calls == 1
    assert [c.request_id for c in await _calls_recorded(replica, "old", "new")] == ["new"]
    assert await replica.runs.count_by_state() == {"queued": 2}  # the jobs stay


async def test_one_call_sent_twice_at_once_creates_its_jobs_once(replica: Components) -> None:
    specs = [spec(payload=bytes([i])) for i in range(5)]
    a, b = await asyncio.gather(
        replica.dispatcher.enqueue_batch("", specs, request_id="r"),
        replica.dispatcher.enqueue_batch("", specs, request_id="r"),
    )
    assert [r.job.id for r in _jobs(a)] == [r.job.id for r in _jobs(b)]
    assert sorted([_jobs(a)[0].created, _jobs(b)[0].created]) == [False, True]
    assert await replica.runs.count_by_state() == {"queued": 5}


async def test_a_repeat_in_a_group_with_new_calls_leaves_their_inserts_whole(
    replica: Components,
) -> None:
    (before,) = _jobs(await replica.dispatcher.enqueue_batch("", [spec()], request_id="seen"))
    repeat, plain, new = await asyncio.gather(
        replica.dispatcher.enqueue_batch("", [spec()], request_id="seen"),
        replica.dispatcher.enqueue_batch("", [spec(), spec()]),
        replica.dispatcher.enqueue_batch("", [spec(), spec()], request_id="new"),
    )
    assert [(r.job.id, r.created) for r in _jobs(repeat)] == [(before.job.id, False)]
    assert all(r.created for r in _jobs(plain) + _jobs(new))
    assert await replica.runs.count_by_state() == {"queued": 5}


async def test_two_replicas_repeating_one_call_at_once_create_its_jobs_once(
    backend: Backend, clock: FakeClock
) -> None:
    replicas = await two_replicas(backend, clock)
    calls = [f"call-{i}" for i in range(20)]

    async def producer(replica: Components) -> list[str]:
        ids = []
        for request_id in calls:
            out = await replica.dispatcher.enqueue_batch(
                "", [spec(), spec()], request_id=request_id
            )
            ids += [r.job.id for r in _jobs(out)]
        return ids

    a, b = await asyncio.gather(producer(replicas[0]), producer(replicas[1]))
    assert a == b
    assert len(set(a)) == 2 * len(calls)
    assert await replicas[0].runs.count_by_state() == {"queued": 2 * len(calls)}


async def test_a_repeat_while_a_lease_waits_hands_it_nothing_and_leaves_it_waiting(
    replica: Components,
) -> None:
    (first,) = _jobs(await replica.dispatcher.enqueue_batch("", [spec()], request_id="r"))
    (taken,) = await lease(replica, ["q"])  # the queue is empty again
    poll = asyncio.create_task(lease(replica, ["q"], wait_ms=60_000))
    await parked(replica)

    (again,) = _jobs(await replica.dispatcher.enqueue_batch("", [spec()], request_id="r"))
    for _ in range(10):
        await asyncio.sleep(0)  # a hand-off, had there been one, would have landed

    assert not poll.done()
    assert again.job.id == first.job.id == taken.job.id and not again.created
    assert await replica.runs.count_by_state() == {"leased": 1}
    leased = await replica.index.client.zrange(replica.index.keys.leased("default", "q"), 0, -1)
    assert [m.decode() if isinstance(m, bytes) else m for m in leased] == [taken.job.id]
    await parked(replica)  # the waiter was released and waits on
    fresh = (await replica.dispatcher.enqueue("", spec())).job
    (granted,) = await asyncio.wait_for(poll, timeout=30)
    assert granted.job.id == fresh.id


async def test_a_call_with_dependencies_is_recorded_in_its_transaction(
    replica: Components,
) -> None:
    (parent,) = _jobs(await replica.dispatcher.enqueue_batch("", [spec()]))
    specs = [spec(depends_on=[parent.job.id]), spec()]
    first = _jobs(await replica.dispatcher.enqueue_batch("", specs, request_id="r"))
    again = _jobs(await replica.dispatcher.enqueue_batch("", specs, request_id="r"))
    assert first[0].job.state is JobState.WAITING
    assert [r.job.id for r in again] == [r.job.id for r in first]
    assert not any(r.created for r in again)
    assert await replica.runs.count_by_state() == {"queued": 2, "waiting": 1}


@pytest.mark.parametrize(
    ("request_id", "specs", "says"),
    [
        ("x" * 129, [spec()], "at most 128 printable ASCII"),
        ("tab\there", [spec()], "at most 128 printable ASCII"),
        ("r", [spec(), spec(idempotency_key="k")], "jobs[1].idempotency_key"),
    ],
)
async def test_a_bad_request_id_is_refused_whole_and_writes_nothing(
    replica: Components, request_id: str, specs: list[object], says: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await replica.dispatcher.enqueue_batch("", specs, request_id=request_id)  # type: ignore[arg-type]
    (violation,) = caught.value.violations
    assert violation.field == "request_id"
    assert says in violation.description
    assert await replica.runs.count_by_state() == {}
    assert await _calls_recorded(replica, request_id) == []


async def test_an_insert_whose_call_is_recorded_writes_none_of_its_jobs(
    replica: Components, clock: FakeClock
) -> None:
    (made,) = _jobs(await replica.dispatcher.enqueue_batch("", [spec()], request_id="r"))
    job = made.job.__class__(**{**made.job.__dict__, "id": "01" + "Z" * 24})
    call = EnqueueCall("default", "r", clock.now_ms(), (job.id,))

    with pytest.raises(CallRecorded):
        await replica.runs.insert_committed([job], [call])

    assert await replica.runs.get(job.id) is None
    assert await replica.runs.count_by_state() == {"queued": 1}


async def test_a_failed_insert_records_no_call(replica: Components, clock: FakeClock) -> None:
    (made,) = _jobs(await replica.dispatcher.enqueue_batch("", [spec()]))
    call = EnqueueCall("default", "r", clock.now_ms(), (made.job.id,))
    with pytest.raises(DuplicateKey):  # the job's id is taken
        await replica.runs.insert_committed([made.job], [call])
    assert await _calls_recorded(replica, "r") == []
