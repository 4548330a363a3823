"""The server: reflection, health, long-poll deadlines, a full tour over the wire."""

from __future__ import annotations

import asyncio
import time

import grpc
from google.protobuf import duration_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from dispatcher.app import DispatcherApp
from dispatcher.service.state import Phase
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2 as pb
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2_grpc
from worker_sdk._proto.dispatch.v1 import job_pb2 as jpb


async def test_reflection_lists_the_dispatcher_and_health_services(
    channel: grpc.aio.Channel,
) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)  # type: ignore[arg-type]

    # write()/done_writing() rather than a request generator: no iterator-consuming
    # task is left behind for the event loop's teardown to wait on.
    call = stub.ServerReflectionInfo()  # type: ignore[operator]
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    await call.done_writing()
    resp = await call.read()
    assert await call.read() == grpc.aio.EOF
    names = {s.name for s in resp.list_services_response.service}
    assert {"dispatch.v1.DispatcherService", "grpc.health.v1.Health"} <= names


async def test_health_says_not_serving_while_the_index_rebuilds(
    app: DispatcherApp, channel: grpc.aio.Channel
) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    serving, not_serving = (
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    )
    assert await _settles_to(health, "", serving)
    app.components.state.phase = Phase.REBUILDING
    assert await _settles_to(health, "dispatch.v1.DispatcherService", not_serving)
    assert await _settles_to(health, "liveness", serving)  # alive all the same
    stub = dispatcher_pb2_grpc.DispatcherServiceStub(channel)
    try:
        await stub.Lease(pb.LeaseRequest(worker_id="w", queues=["q"]))
        raise AssertionError("Lease must not answer while rebuilding")
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_long_poll_answers_empty_before_a_short_client_deadline(
    stub: dispatcher_pb2_grpc.DispatcherServiceAsyncStub,
) -> None:
    started = time.monotonic()
    resp = await stub.Lease(
        pb.LeaseRequest(worker_id="w", queues=["q"], wait=duration_pb2.Duration(seconds=20)),
        timeout=1.0,
    )
    assert list(resp.leases) == []
    assert time.monotonic() - started < 1.0


async def test_the_tour_enqueue_lease_heartbeat_ack_status_works_over_grpc(
    stub: dispatcher_pb2_grpc.DispatcherServiceAsyncStub,
) -> None:
    enq = await stub.Enqueue(
        pb.EnqueueRequest(
            job=jpb.JobSpec(
                queue="emails",
                type="send",
                payload=b'{"to":"a@b"}',
                content_type="application/json",
                priority=jpb.PRIORITY_HIGH,
                metadata={"tenant": "t1"},
                max_attempts=4,
            )
        )
    )
    assert enq.job.state == jpb.JOB_STATE_QUEUED
    lease = (
        await stub.Lease(
            pb.LeaseRequest(
                worker_id="w1", queues=["emails"], wait=duration_pb2.Duration(seconds=1)
            )
        )
    ).leases[0]
    assert lease.job.id == enq.job.id and lease.job.attempt == 1
    assert lease.job.payload == b'{"to":"a@b"}' and lease.job.metadata["tenant"] == "t1"
    hb = await stub.Heartbeat(
        pb.HeartbeatRequest(
            items=[
                pb.HeartbeatItem(
                    lease_token=lease.lease_token, progress=jpb.Progress(percent=50, message="half")
                )
            ]
        )
    )
    assert hb.results[0].expire_time.seconds >= lease.expire_time.seconds
    mid = await stub.GetStatus(pb.GetStatusRequest(job_id=enq.job.id))
    assert (mid.job.state, mid.job.lease_holder, mid.job.progress.percent) == (
        jpb.JOB_STATE_LEASED,
        "w1",
        50,
    )
    await stub.Ack(pb.AckRequest(items=[pb.AckItem(lease_token=lease.lease_token, result=b"sent")]))
    done = await stub.GetStatus(pb.GetStatusRequest(job_id=enq.job.id))
    assert (done.job.state, done.job.result, done.job.version) == (
        jpb.JOB_STATE_SUCCEEDED,
        b"sent",
        3,
    )
    assert done.job.HasField("finish_time")


async def _settles_to(health: health_pb2_grpc.HealthStub, service: str, want: int) -> bool:
    """The health status is reported by a loop; give it a moment to catch up."""
    for _ in range(100):
        got = await health.Check(health_pb2.HealthCheckRequest(service=service))  # type: ignore[attr-defined]
        if got.status == want:
            return True
        await asyncio.sleep(0.02)
    return False
