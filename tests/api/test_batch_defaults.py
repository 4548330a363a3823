"""EnqueueBatch's defaults: each job is the defaults with its own fields over them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
from google.protobuf import duration_pb2, timestamp_pb2

from tests.api.test_errors import _error
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2 as pb
from worker_sdk._proto.dispatch.v1 import job_pb2 as jpb

if TYPE_CHECKING:
    from worker_sdk._proto.dispatch.v1.dispatcher_pb2_grpc import DispatcherServiceAsyncStub as Stub

# Defaults with a field of every kind: scalars, a map, a message, the start
# oneof (tests/unit/test_convert.py and tests/service/test_batch_defaults_jobs.py
# use them too).
DEFAULTS = jpb.JobSpec(
    queue="q",
    type="t",
    content_type="application/json",
    priority=jpb.PRIORITY_HIGH,
    metadata={"tenant": "a", "team": "x"},
    max_attempts=7,
    retry_policy=jpb.RetryPolicy(multiplier=3.0),
    delay=duration_pb2.Duration(seconds=60),
    concurrency_key="k",
)


async def _stored(stub: Stub, job_id: str) -> jpb.Job:
    return (await stub.GetStatus(pb.GetStatusRequest(job_id=job_id))).job


async def _leasable(stub: Stub, queue: str) -> int:
    reply = await stub.Lease(pb.LeaseRequest(worker_id="w", queues=[queue], max_jobs=10))
    return len(reply.leases)


async def test_a_job_that_sets_only_its_payload_takes_every_other_field_from_the_defaults(
    stub: Stub,
) -> None:
    request = pb.EnqueueBatchRequest(
        defaults=DEFAULTS, jobs=[jpb.JobSpec(payload=b"1"), jpb.JobSpec(payload=b"2")]
    )
    results = (await stub.EnqueueBatch(request)).results

    for result, payload in zip(results, (b"1", b"2"), strict=True):
        stored = await _stored(stub, result.job.id)
        assert (stored.queue, stored.type, stored.payload) == ("q", "t", payload)
        assert stored.content_type == "application/json"
        assert (stored.priority, stored.max_attempts) == (jpb.PRIORITY_HIGH, 7)
        assert dict(stored.metadata) == {"tenant": "a", "team": "x"}
        assert stored.state == jpb.JOB_STATE_SCHEDULED
        delay_ms = stored.next_run_time.ToMilliseconds() - stored.create_time.ToMilliseconds()
        assert delay_ms == 60_000


async def test_a_field_a_job_sets_replaces_the_defaults_whole(stub: Stub) -> None:
    now = (await stub.Enqueue(pb.EnqueueRequest(job=jpb.JobSpec(queue="clock", type="t")))).job
    run_at = timestamp_pb2.Timestamp()
    run_at.FromMilliseconds(now.create_time.ToMilliseconds() + 3_600_000)
    own = jpb.JobSpec(
        queue="other",
        payload=b"p",
        priority=jpb.PRIORITY_LOW,
        metadata={"tenant": "b"},  # the map as a whole: no "team" from the defaults
        run_at=run_at,  # the oneof: the default delay is dropped
    )
    request = pb.EnqueueBatchRequest(defaults=DEFAULTS, jobs=[own])

    (result,) = (await stub.EnqueueBatch(request)).results
    stored = await _stored(stub, result.job.id)

    assert (stored.queue, stored.type, stored.priority) == ("other", "t", jpb.PRIORITY_LOW)
    assert dict(stored.metadata) == {"tenant": "b"}
    assert stored.next_run_time == run_at
    assert stored.max_attempts == 7


async def test_defaults_invalid_on_their_own_fail_the_call_by_their_names_and_write_nothing(
    stub: Stub,
) -> None:
    cases = {
        "defaults.queue": jpb.JobSpec(queue="a{x}"),
        "defaults.max_attempts": jpb.JobSpec(max_attempts=-1),
        "defaults.idempotency_key": jpb.JobSpec(idempotency_key="one-job-only"),
        "defaults.priority": jpb.JobSpec(priority=77),  # type: ignore[arg-type]
    }
    for field, defaults in cases.items():
        jobs = [jpb.JobSpec(queue="bad-defaults", type="t", payload=b"%d" % i) for i in range(2)]
        call = stub.EnqueueBatch(pb.EnqueueBatchRequest(defaults=defaults, jobs=jobs))

        code, _, fields, message = await _error(call)

        assert (code, fields) == (grpc.StatusCode.INVALID_ARGUMENT, [field]), message
    assert await _leasable(stub, "bad-defaults") == 0


async def test_defaults_without_a_queue_or_type_leave_them_to_each_job(stub: Stub) -> None:
    defaults = jpb.JobSpec(max_attempts=3)
    jobs = [jpb.JobSpec(queue="q", type="t"), jpb.JobSpec(queue="q")]  # the second has no type
    request = pb.EnqueueBatchRequest(defaults=defaults, jobs=jobs)

    made, refused = (await stub.EnqueueBatch(request)).results

    assert (await _stored(stub, made.job.id)).max_attempts == 3
    assert refused.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "jobs[1].type" in refused.error.message


async def test_a_retry_with_defaults_gets_the_first_calls_jobs(stub: Stub) -> None:
    request = pb.EnqueueBatchRequest(
        defaults=DEFAULTS,
        jobs=[jpb.JobSpec(payload=b"1"), jpb.JobSpec(payload=b"2")],
        request_id="defaults-retry",
    )
    first = (await stub.EnqueueBatch(request)).results
    again = (await stub.EnqueueBatch(request)).results
    # The same jobs sent in full are the same call: what is compared is each job made.
    full = pb.EnqueueBatchRequest(request_id="defaults-retry")
    for spec in request.jobs:
        merged = full.jobs.add()
        merged.CopyFrom(DEFAULTS)
        merged.MergeFrom(spec)
    in_full = (await stub.EnqueueBatch(full)).results

    assert [r.created for r in first] == [True, True]
    assert [r.created for r in again] == [r.created for r in in_full] == [False, False]
    assert [r.job.id for r in again] == [r.job.id for r in in_full] == [r.job.id for r in first]
