"""Every failure reaches the client as the documented code and reason, never a traceback."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc
import pytest
import redis.asyncio as redis_asyncio
from google.rpc import error_details_pb2  # type: ignore[import-untyped]
from grpc_status import rpc_status

from dispatcher.app import DispatcherApp
from dispatcher.store.redis.index import RedisIndex
from dispatcher.store.redis.keys import Keys
from dispatcher.store.sql.engine import create_engine
from dispatcher.store.sql.runs import RunStore
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2 as pb
from worker_sdk._proto.dispatch.v1 import job_pb2 as jpb

if TYPE_CHECKING:
    from worker_sdk._proto.dispatch.v1.dispatcher_pb2_grpc import DispatcherServiceAsyncStub as Stub


async def _error(call: Any) -> tuple[grpc.StatusCode, str, list[str], str]:
    """Await a failing call; return its code, ErrorInfo reason, bad fields and message."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    status = await rpc_status.aio.from_call(call)
    assert status is not None, "the error carries a google.rpc.Status"
    reason, fields = "", []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            ei = error_details_pb2.ErrorInfo()
            detail.Unpack(ei)
            reason = ei.reason
            assert ei.domain == "dispatch"
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            detail.Unpack(br)
            fields = [v.field for v in br.field_violations]
    message = info.value.details() or ""
    assert "Traceback" not in message and "SELECT" not in message and "dsp:" not in message
    return info.value.code(), reason, fields, message


def job(**kw: Any) -> jpb.JobSpec:
    kw.setdefault("queue", "q")
    kw.setdefault("type", "t")
    return jpb.JobSpec(**kw)


async def _leased(stub: Stub) -> pb.Lease:
    await stub.Enqueue(pb.EnqueueRequest(job=job()))
    resp = await stub.Lease(pb.LeaseRequest(worker_id="w", queues=["q"]))
    return resp.leases[0]


async def test_a_bad_queue_name_is_invalid_argument_naming_the_field(stub: Stub) -> None:
    code, reason, fields, _ = await _error(stub.Enqueue(pb.EnqueueRequest(job=job(queue="a{x}"))))
    assert (code, reason, fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
        ["job.queue"],
    )


async def test_an_unknown_priority_value_is_invalid_argument(stub: Stub) -> None:
    code, _, fields, _ = await _error(stub.Enqueue(pb.EnqueueRequest(job=job(priority=99))))
    assert (code, fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["job.priority"])


async def test_an_unknown_job_is_not_found(stub: Stub) -> None:
    code, reason, _, _ = await _error(
        stub.GetStatus(pb.GetStatusRequest(job_id="01M83HEKD3AA16Q5HS2VATHPWR"))
    )
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "JOB_NOT_FOUND")


async def test_a_malformed_job_id_is_invalid_argument(stub: Stub) -> None:
    code, _, fields, _ = await _error(stub.GetStatus(pb.GetStatusRequest(job_id="../../etc")))
    assert (code, fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["job_id"])


async def test_a_stale_token_fails_heartbeat_ack_and_nack_with_failed_precondition(
    stub: Stub,
) -> None:
    lease = await _leased(stub)
    await stub.Ack(pb.AckRequest(items=[pb.AckItem(lease_token=lease.lease_token)]))
    for call in (
        stub.Heartbeat(
            pb.HeartbeatRequest(items=[pb.HeartbeatItem(lease_token=lease.lease_token)])
        ),
        stub.Nack(pb.NackRequest(items=[pb.NackItem(lease_token=lease.lease_token, retry=True)])),
    ):
        code, reason, _, _ = await _error(call)
        assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "LEASE_EXPIRED")


async def test_a_multi_item_call_answers_ok_with_one_result_per_item(stub: Stub) -> None:
    lease = await _leased(stub)
    resp = await stub.Ack(
        pb.AckRequest(
            items=[
                pb.AckItem(lease_token=lease.lease_token, result=b"r"),
                pb.AckItem(lease_token="nonsense"),
            ]
        )
    )
    assert not resp.results[0].HasField("error")
    assert resp.results[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert resp.results[1].error.reason == "INVALID_FIELD"
    status = await stub.GetStatus(pb.GetStatusRequest(job_id=lease.job.id))
    assert status.job.state == jpb.JOB_STATE_SUCCEEDED
    assert status.job.result == b"r"


async def test_enqueue_batch_reports_bad_items_and_writes_good_ones(stub: Stub) -> None:
    resp = await stub.EnqueueBatch(
        pb.EnqueueBatchRequest(jobs=[job(), job(priority=42), job(queue="")])
    )
    assert resp.results[0].job.id and resp.results[0].created
    assert resp.results[1].error.reason == "INVALID_FIELD"
    assert resp.results[2].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    leases = await stub.Lease(pb.LeaseRequest(worker_id="w", queues=["q"], max_jobs=10))
    assert [le.job.id for le in leases.leases] == [resp.results[0].job.id]


async def test_a_message_over_the_size_limit_is_resource_exhausted(stub: Stub) -> None:
    huge = job(payload=b"x" * (9 * 1024 * 1024))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Enqueue(pb.EnqueueRequest(job=huge))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_a_payload_over_the_job_limit_is_invalid_argument(stub: Stub) -> None:
    code, _, fields, _ = await _error(
        stub.Enqueue(pb.EnqueueRequest(job=job(payload=b"x" * (1024 * 1024 + 1))))
    )
    assert (code, fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["job.payload"])


async def test_an_unexpected_error_is_internal_with_an_incident_id_and_no_traceback(
    app: DispatcherApp, stub: Stub, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_: Any) -> None:
        raise RuntimeError("secret detail: SELECT * FROM runs")

    monkeypatch.setattr(app.components.dispatcher, "get", broken)
    code, reason, _, message = await _error(
        stub.GetStatus(pb.GetStatusRequest(job_id="01M83HEKD3AA16Q5HS2VATHPWR"))
    )
    assert (code, reason) == (grpc.StatusCode.INTERNAL, "INTERNAL")
    assert "secret" not in message and "incident" in message


async def test_redis_being_down_is_unavailable(app: DispatcherApp, stub: Stub) -> None:
    dead = RedisIndex(
        redis_asyncio.from_url("redis://127.0.0.1:1", socket_connect_timeout=1), Keys("dead")
    )
    app.components.dispatcher.index = dead
    try:
        code, reason, _, _ = await _error(stub.Lease(pb.LeaseRequest(worker_id="w", queues=["q"])))
    finally:
        await dead.client.aclose()
    assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "STORE_UNAVAILABLE")


async def test_the_database_being_down_is_unavailable(app: DispatcherApp, stub: Stub) -> None:
    dead = RunStore(create_engine("postgresql://nobody@127.0.0.1:1/none"))
    app.components.dispatcher.runs = dead
    try:
        code, reason, _, _ = await _error(stub.Enqueue(pb.EnqueueRequest(job=job())))
    finally:
        await dead.dispose()
    assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "STORE_UNAVAILABLE")


async def test_a_repeated_enqueue_batch_answers_with_the_first_calls_jobs_over_grpc(
    stub: Stub,
) -> None:
    request = pb.EnqueueBatchRequest(jobs=[job(), job(payload=b"p")], request_id="call-7")
    first = await stub.EnqueueBatch(request)
    again = await stub.EnqueueBatch(request)
    assert [r.job.id for r in again.results] == [r.job.id for r in first.results]
    assert [r.created for r in first.results] == [True, True]
    assert [r.created for r in again.results] == [False, False]

    other = pb.EnqueueBatchRequest(jobs=[job()], request_id="call-7")
    code, reason, _, message = await _error(stub.EnqueueBatch(other))
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED")
    assert "2 jobs, not 1" in message


async def test_a_request_id_beside_idempotency_keys_is_invalid_argument_naming_it(
    stub: Stub,
) -> None:
    request = pb.EnqueueBatchRequest(jobs=[job(idempotency_key="k")], request_id="r")
    code, reason, fields, message = await _error(stub.EnqueueBatch(request))
    assert (code, reason, fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
        ["request_id"],
    )
    assert "jobs[0].idempotency_key" in message
    leases = await stub.Lease(pb.LeaseRequest(worker_id="w", queues=["q"], max_jobs=10))
    assert list(leases.leases) == []
