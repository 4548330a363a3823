"""JobView: how much of each new job an Enqueue or EnqueueBatch reply carries."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf import duration_pb2

from tests.api.test_errors import job
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2 as pb
from worker_sdk._proto.dispatch.v1 import job_pb2 as jpb

if TYPE_CHECKING:
    from worker_sdk._proto.dispatch.v1.dispatcher_pb2_grpc import DispatcherServiceAsyncStub as Stub

# The fields a BASIC view sets: what the server decided and a producer needs.
BASIC_FIELDS = {
    "id",
    "namespace",
    "queue",
    "type",
    "state",
    "version",
    "create_time",
    "next_run_time",
}


def set_fields(message: jpb.Job) -> set[str]:
    return {f.name for f, _ in message.ListFields()}


async def test_a_basic_batch_reply_carries_ids_states_and_times_but_not_the_payload(
    stub: Stub,
) -> None:
    request = pb.EnqueueBatchRequest(
        jobs=[
            job(payload=b"p", metadata={"k": "v"}, max_attempts=7),
            job(delay=duration_pb2.Duration(seconds=60)),
        ],
        view=pb.JOB_VIEW_BASIC,
    )
    queued, scheduled = (r.job for r in (await stub.EnqueueBatch(request)).results)

    assert set_fields(queued) == BASIC_FIELDS
    assert (queued.namespace, queued.queue, queued.type) == ("default", "q", "t")
    assert (queued.state, queued.version) == (jpb.JOB_STATE_QUEUED, 1)
    assert set_fields(scheduled) == BASIC_FIELDS
    assert scheduled.state == jpb.JOB_STATE_SCHEDULED
    delay_ms = scheduled.next_run_time.ToMilliseconds() - scheduled.create_time.ToMilliseconds()
    assert delay_ms == 60_000
    # What the reply leaves out was stored all the same.
    stored = (await stub.GetStatus(pb.GetStatusRequest(job_id=queued.id))).job
    assert (stored.payload, dict(stored.metadata), stored.max_attempts) == (b"p", {"k": "v"}, 7)
    assert stored.create_time == queued.create_time


@pytest.mark.parametrize("view", [pb.JOB_VIEW_UNSPECIFIED, pb.JOB_VIEW_FULL])
async def test_the_default_and_full_views_carry_the_job_as_get_status_does(
    stub: Stub, view: pb.JobView.ValueType
) -> None:
    request = pb.EnqueueBatchRequest(jobs=[job(payload=b"p", metadata={"k": "v"})], view=view)
    (result,) = (await stub.EnqueueBatch(request)).results
    stored = (await stub.GetStatus(pb.GetStatusRequest(job_id=result.job.id))).job
    assert result.job == stored
    assert result.job.payload == b"p"


async def test_a_single_enqueue_in_the_basic_view_carries_the_same_fields(stub: Stub) -> None:
    basic = await stub.Enqueue(pb.EnqueueRequest(job=job(payload=b"p"), view=pb.JOB_VIEW_BASIC))
    full = await stub.Enqueue(pb.EnqueueRequest(job=job(payload=b"p")))
    assert set_fields(basic.job) == BASIC_FIELDS
    assert basic.created
    assert full.job.payload == b"p"


async def test_a_basic_batch_with_a_refused_item_and_a_repeated_call_stays_basic(
    stub: Stub,
) -> None:
    """The replies built from the answers (an item refused, jobs found by the
    call's request_id) take the view too."""
    request = pb.EnqueueBatchRequest(
        jobs=[job(payload=b"p"), job(queue="")], request_id="call-1", view=pb.JOB_VIEW_BASIC
    )
    first = await stub.EnqueueBatch(request)
    again = await stub.EnqueueBatch(request)

    assert set_fields(first.results[0].job) == BASIC_FIELDS
    assert first.results[1].error.reason == "INVALID_FIELD"
    assert set_fields(again.results[0].job) == BASIC_FIELDS
    assert again.results[0].job.id == first.results[0].job.id
    assert not again.results[0].created


@pytest.mark.parametrize("rpc", ["Enqueue", "EnqueueBatch"])
async def test_an_unknown_view_is_invalid_argument_and_enqueues_nothing(
    stub: Stub, rpc: str
) -> None:
    unknown = pb.JobView.ValueType(7)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        if rpc == "Enqueue":
            await stub.Enqueue(pb.EnqueueRequest(job=job(), view=unknown))
        else:
            await stub.EnqueueBatch(pb.EnqueueBatchRequest(jobs=[job()], view=unknown))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "view" in (info.value.details() or "")
    leases = await stub.Lease(pb.LeaseRequest(worker_id="w", queues=["q"], max_jobs=10))
    assert list(leases.leases) == []
