"""Enqueue: durable before it answers, idempotent by key, validated before any write."""

from __future__ import annotations

import pytest

from dispatcher.app import Components
from dispatcher.domain.errors import InvalidArgument
from dispatcher.domain.models import JobState, RetryPolicy
from dispatcher.store.sql.engine import create_engine
from dispatcher.store.sql.runs import RunStore
from tests.backends import Backend
from tests.service.helpers import lease, spec


async def test_an_enqueued_job_is_committed_before_enqueue_returns(
    replica: Components, backend: Backend
) -> None:
    out = await replica.dispatcher.enqueue("", spec(payload=b"hello"))
    # A separate engine sees the row at once: the transaction was committed.
    other = RunStore(create_engine(backend.database_url))
    try:
        row = await other.get(out.job.id)
    finally:
        await other.dispose()
    assert row is not None
    assert row.payload == b"hello"
    assert row.state is JobState.QUEUED
    assert out.created


async def test_a_second_enqueue_with_the_same_idempotency_key_returns_the_first_job(
    replica: Components,
) -> None:
    first = await replica.dispatcher.enqueue("", spec(idempotency_key="order-7", payload=b"a"))
    second = await replica.dispatcher.enqueue("", spec(idempotency_key="order-7", payload=b"a"))
    assert second.job.id == first.job.id
    assert not second.created
    granted = await lease(replica, n=10)
    assert [g.job.id for g in granted] == [first.job.id]


async def test_the_same_key_twice_in_one_batch_creates_one_job(replica: Components) -> None:
    results = await replica.dispatcher.enqueue_batch(
        "", [spec(idempotency_key="k"), spec(idempotency_key="k"), spec()]
    )
    ids = [r.job.id for r in results]  # type: ignore[union-attr]
    assert ids[0] == ids[1] != ids[2]
    assert len(await lease(replica, n=10)) == 2


async def test_idempotency_keys_are_scoped_to_a_namespace(replica: Components) -> None:
    a = await replica.dispatcher.enqueue("tenant-a", spec(idempotency_key="k"))
    b = await replica.dispatcher.enqueue("tenant-b", spec(idempotency_key="k"))
    assert a.job.id != b.job.id
    assert b.job.namespace == "tenant-b"


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (spec(queue="a{b}"), "job.queue"),
        (spec(queue="a:b"), "job.queue"),
        (spec(queue=""), "job.queue"),
        (spec(queue="x" * 129), "job.queue"),
        (spec(type=""), "job.type"),
        (spec(type="bad type"), "job.type"),
        (spec(payload=b"x" * (1024 * 1024 + 1)), "job.payload"),
        (spec(max_attempts=-1), "job.max_attempts"),
        (spec(max_attempts=1001), "job.max_attempts"),
        (spec(lease_duration_ms=10), "job.lease_duration"),
        (spec(delay_ms=-5), "job.delay"),
        (spec(metadata={"k": "v" * 2000}), "job.metadata[k]"),
        (spec(idempotency_key="line\nbreak"), "job.idempotency_key"),
        (spec(content_type="x" * 257), "job.content_type"),
        (spec(concurrency_key="line\nbreak"), "job.concurrency_key"),
        # Each field whose zero value lets validation skip a group of checks,
        # set alone: the skip must not hide it.
        (spec(retry_policy=RetryPolicy(multiplier=0.5)), "job.retry_policy.multiplier"),
        (spec(callback_url="ftp://example.com/x"), "job.callback_url"),
        (spec(start_within_ms=10), "job.start_within"),
        (spec(max_run_ms=8 * 24 * 3600 * 1000), "job.max_run_time"),
        (spec(depends_on=["not-an-id"]), "job.depends_on[0]"),
    ],
)
async def test_an_invalid_spec_is_refused_with_the_field_named_and_nothing_written(
    replica: Components, bad: object, field: str
) -> None:
    with pytest.raises(InvalidArgument) as info:
        await replica.dispatcher.enqueue("", bad)  # type: ignore[arg-type]
    assert field in [v.field for v in info.value.violations]
    assert await replica.runs.count_by_state() == {}


async def test_a_malformed_dependency_is_refused_as_malformed_before_any_lookup(
    replica: Components,
) -> None:
    # The dependency lookup would refuse the id too ("no job with this id"): the
    # description tells that validation's lifecycle checks ran, skip or not.
    with pytest.raises(InvalidArgument) as info:
        await replica.dispatcher.enqueue("", spec(depends_on=["not-an-id"]))
    assert [(v.field, v.description) for v in info.value.violations] == [
        ("job.depends_on[0]", "must be a 26-character job id")
    ]
    assert await replica.runs.count_by_state() == {}


async def test_a_namespace_that_could_forge_a_redis_key_is_refused(replica: Components) -> None:
    for ns in ["a}b", "a/b", "a:b", "*", "x\x00"]:
        with pytest.raises(InvalidArgument):
            await replica.dispatcher.enqueue(ns, spec())
    assert await replica.runs.count_by_state() == {}


async def test_a_batch_writes_its_valid_items_and_reports_each_invalid_one(
    replica: Components,
) -> None:
    results = await replica.dispatcher.enqueue_batch("", [spec(), spec(queue="{bad}"), spec()])
    assert isinstance(results[1], InvalidArgument)
    assert results[1].violations[0].field == "jobs[1].queue"
    assert await replica.runs.count_by_state() == {"queued": 2}


async def test_a_batch_over_the_limit_is_refused_whole(replica: Components) -> None:
    with pytest.raises(InvalidArgument) as info:
        await replica.dispatcher.enqueue_batch("", [spec()] * 1001)
    assert info.value.reason == "BATCH_TOO_LARGE"
    assert await replica.runs.count_by_state() == {}


async def test_a_delayed_job_is_scheduled_and_not_leasable_before_its_time(
    replica: Components, clock: object
) -> None:
    out = await replica.dispatcher.enqueue("", spec(delay_ms=5000))
    assert out.job.state is JobState.SCHEDULED
    assert await lease(replica) == []
    clock.advance(5)  # type: ignore[attr-defined]
    stats = await replica.reaper.run_once(clock.now_ms())  # type: ignore[attr-defined]
    assert stats.promoted == 1
    assert [g.job.id for g in await lease(replica)] == [out.job.id]
