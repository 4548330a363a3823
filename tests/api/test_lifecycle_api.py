"""Lifecycle features over the wire: cancel, pause, back-pressure with RetryInfo, reused keys."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import grpc
import pytest
from google.rpc import error_details_pb2  # type: ignore[import-untyped]
from grpc_status import rpc_status

from dispatcher import cli
from dispatcher.app import DispatcherApp
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2 as pb
from worker_sdk._proto.dispatch.v1 import job_pb2 as jpb

if TYPE_CHECKING:
    from worker_sdk._proto.dispatch.v1.dispatcher_pb2_grpc import DispatcherServiceAsyncStub as Stub


def job(**kw: object) -> jpb.JobSpec:
    return jpb.JobSpec(queue="q", type="t", **kw)  # type: ignore[arg-type]


async def _cli(app: DispatcherApp, *argv: str) -> int:
    return await asyncio.to_thread(cli.main, [*argv, "--address", f"127.0.0.1:{app.port}"])


async def test_a_full_queue_answers_resource_exhausted_with_a_retry_delay(
    app: DispatcherApp, stub: Stub, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await _cli(app, "limits", "--queue", "q", "--max-depth", "1") == 0
    await stub.Enqueue(pb.EnqueueRequest(job=job()))
    call = stub.Enqueue(pb.EnqueueRequest(job=job()))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = await rpc_status.aio.from_call(call)
    assert status is not None
    retry = [d for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
    assert len(retry) == 1
    unpacked = error_details_pb2.RetryInfo()
    retry[0].Unpack(unpacked)
    assert unpacked.retry_delay.seconds + unpacked.retry_delay.nanos > 0


async def test_a_reused_key_with_another_payload_is_already_exists(stub: Stub) -> None:
    await stub.Enqueue(pb.EnqueueRequest(job=job(idempotency_key="k", payload=b"1")))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Enqueue(pb.EnqueueRequest(job=job(idempotency_key="k", payload=b"2")))
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_cancel_reaches_the_worker_through_its_heartbeat_and_refuses_its_ack(
    app: DispatcherApp, stub: Stub, capsys: pytest.CaptureFixture[str]
) -> None:
    await stub.Enqueue(pb.EnqueueRequest(job=job()))
    lease = (await stub.Lease(pb.LeaseRequest(worker_id="w", queues=["q"]))).leases[0]
    assert await _cli(app, "cancel", lease.job.id, "--reason", "user asked") == 0
    assert "cancel requested" in capsys.readouterr().out
    hb = await stub.Heartbeat(
        pb.HeartbeatRequest(items=[pb.HeartbeatItem(lease_token=lease.lease_token)])
    )
    assert hb.results[0].cancel_requested
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Ack(pb.AckRequest(items=[pb.AckItem(lease_token=lease.lease_token)]))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    await stub.Nack(
        pb.NackRequest(items=[pb.NackItem(lease_token=lease.lease_token, error="stopped")])
    )
    done = (await stub.GetStatus(pb.GetStatusRequest(job_id=lease.job.id))).job
    assert (done.state, done.terminal_reason) == (
        jpb.JOB_STATE_CANCELLED,
        jpb.TERMINAL_REASON_CANCELLED,
    )


async def test_pause_and_resume_from_the_cli(
    app: DispatcherApp, stub: Stub, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await _cli(app, "pause", "--queue", "q") == 0
    await stub.Enqueue(pb.EnqueueRequest(job=job()))
    assert not (await stub.Lease(pb.LeaseRequest(worker_id="w", queues=["q"]))).leases
    assert await _cli(app, "resume", "--queue", "q") == 0
    assert len((await stub.Lease(pb.LeaseRequest(worker_id="w", queues=["q"]))).leases) == 1
