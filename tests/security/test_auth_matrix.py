"""Every RPC x {no credentials, revoked, wrong tenant, wrong role, valid}: the right status,
and nothing changes in SQL or Redis when a call is refused."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from sqlalchemy import select

from dispatcher.app import DispatcherApp
from dispatcher.store.sql.tables import metadata
from tests.security.conftest import Tokens
from tests.service.helpers import parked, record_lease_scripts
from worker_sdk._proto.dispatch.v1 import admin_pb2 as apb
from worker_sdk._proto.dispatch.v1 import admin_pb2_grpc, dispatcher_pb2_grpc, schedule_pb2_grpc
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2 as pb
from worker_sdk._proto.dispatch.v1 import job_pb2 as jpb
from worker_sdk._proto.dispatch.v1 import schedule_pb2 as spb

C = grpc.StatusCode


def bearer(token: str | None) -> list[tuple[str, str]]:
    return [] if token is None else [("authorization", f"Bearer {token}")]


@dataclass
class World:
    """A job in tenant-a, leased by `worker`, a schedule there, and the stubs to reach them."""

    stub: dispatcher_pb2_grpc.DispatcherServiceAsyncStub
    admin: admin_pb2_grpc.AdminServiceAsyncStub
    job_id: str
    token: str
    schedules: schedule_pb2_grpc.ScheduleServiceAsyncStub
    schedule_id: str


def a_schedule(name: str) -> spb.Schedule:
    return spb.Schedule(name=name, cron="0 3 * * *", job_template=jpb.JobSpec(queue="q", type="t"))


async def _world(app: DispatcherApp, tokens: Tokens, channel: grpc.aio.Channel) -> World:
    stub = dispatcher_pb2_grpc.DispatcherServiceStub(channel)
    meta = bearer(tokens.producer)
    await stub.Enqueue(pb.EnqueueRequest(job=jpb.JobSpec(queue="q", type="t")), metadata=meta)
    lease = (
        await stub.Lease(
            pb.LeaseRequest(worker_id="w", queues=["q"]), metadata=bearer(tokens.worker)
        )
    ).leases[0]
    schedules = schedule_pb2_grpc.ScheduleServiceStub(channel)
    created = await schedules.CreateSchedule(
        spb.CreateScheduleRequest(schedule=a_schedule("nightly")), metadata=meta
    )
    return World(
        stub,
        admin_pb2_grpc.AdminServiceStub(channel),
        lease.job.id,
        lease.lease_token,
        schedules,
        created.schedule.id,
    )


# Each RPC: the role it needs, and a call made with the given metadata. Namespace is
# left empty (the credential decides) except where `ns` is passed for the wrong tenant.
CALLS: dict[str, tuple[str, Callable[[World, Any, str], Any]]] = {
    "Enqueue": (
        "producer",
        lambda w, m, ns: w.stub.Enqueue(
            pb.EnqueueRequest(namespace=ns, job=jpb.JobSpec(queue="q", type="t")), metadata=m
        ),
    ),
    "EnqueueBatch": (
        "producer",
        lambda w, m, ns: w.stub.EnqueueBatch(
            pb.EnqueueBatchRequest(namespace=ns, jobs=[jpb.JobSpec(queue="q", type="t")]),
            metadata=m,
        ),
    ),
    "GetStatus": (
        "producer",
        lambda w, m, ns: w.stub.GetStatus(
            pb.GetStatusRequest(namespace=ns, job_id=w.job_id), metadata=m
        ),
    ),
    "Cancel": (
        "producer",
        lambda w, m, ns: w.stub.Cancel(pb.CancelRequest(namespace=ns, job_id=w.job_id), metadata=m),
    ),
    "Lease": (
        "worker",
        lambda w, m, ns: w.stub.Lease(
            pb.LeaseRequest(namespace=ns, worker_id="x", queues=["q"]), metadata=m
        ),
    ),
    "Heartbeat": (
        "worker",
        lambda w, m, ns: w.stub.Heartbeat(
            pb.HeartbeatRequest(namespace=ns, items=[pb.HeartbeatItem(lease_token=w.token)]),
            metadata=m,
        ),
    ),
    "Ack": (
        "worker",
        lambda w, m, ns: w.stub.Ack(
            pb.AckRequest(namespace=ns, items=[pb.AckItem(lease_token=w.token)]), metadata=m
        ),
    ),
    "Nack": (
        "worker",
        lambda w, m, ns: w.stub.Nack(
            pb.NackRequest(namespace=ns, items=[pb.NackItem(lease_token=w.token)]), metadata=m
        ),
    ),
    "ListQueues": (
        "admin",
        lambda w, m, ns: w.admin.ListQueues(apb.ListQueuesRequest(namespace=ns), metadata=m),
    ),
    "ListJobs": (
        "admin",
        lambda w, m, ns: w.admin.ListJobs(apb.ListJobsRequest(namespace=ns, queue="q"), metadata=m),
    ),
    "RetryDeadLettered": (
        "admin",
        lambda w, m, ns: w.admin.RetryDeadLettered(
            apb.RetryDeadLetteredRequest(namespace=ns, queue="q"), metadata=m
        ),
    ),
    "PurgeQueue": (
        "admin",
        lambda w, m, ns: w.admin.PurgeQueue(
            apb.PurgeQueueRequest(namespace=ns, queue="q"), metadata=m
        ),
    ),
    "PauseQueue": (
        "admin",
        lambda w, m, ns: w.admin.PauseQueue(
            apb.PauseQueueRequest(namespace=ns, queue="q"), metadata=m
        ),
    ),
    "ResumeQueue": (
        "admin",
        lambda w, m, ns: w.admin.ResumeQueue(
            apb.ResumeQueueRequest(namespace=ns, queue="q"), metadata=m
        ),
    ),
    "SetQueueLimits": (
        "admin",
        lambda w, m, ns: w.admin.SetQueueLimits(
            apb.SetQueueLimitsRequest(namespace=ns, queue="q", max_depth=5), metadata=m
        ),
    ),
    "ListWorkers": (
        "admin",
        lambda w, m, ns: w.admin.ListWorkers(apb.ListWorkersRequest(namespace=ns), metadata=m),
    ),
    # Schedules enqueue jobs later, on the producer's behalf: the producer role, as Enqueue.
    "CreateSchedule": (
        "producer",
        lambda w, m, ns: w.schedules.CreateSchedule(
            spb.CreateScheduleRequest(namespace=ns, schedule=a_schedule("hourly")), metadata=m
        ),
    ),
    "GetSchedule": (
        "producer",
        lambda w, m, ns: w.schedules.GetSchedule(
            spb.GetScheduleRequest(namespace=ns, schedule_id=w.schedule_id), metadata=m
        ),
    ),
    "ListSchedules": (
        "producer",
        lambda w, m, ns: w.schedules.ListSchedules(
            spb.ListSchedulesRequest(namespace=ns), metadata=m
        ),
    ),
    "PauseSchedule": (
        "producer",
        lambda w, m, ns: w.schedules.PauseSchedule(
            spb.PauseScheduleRequest(namespace=ns, schedule_id=w.schedule_id), metadata=m
        ),
    ),
    "ResumeSchedule": (
        "producer",
        lambda w, m, ns: w.schedules.ResumeSchedule(
            spb.ResumeScheduleRequest(namespace=ns, schedule_id=w.schedule_id), metadata=m
        ),
    ),
    "DeleteSchedule": (
        "producer",
        lambda w, m, ns: w.schedules.DeleteSchedule(
            spb.DeleteScheduleRequest(namespace=ns, schedule_id=w.schedule_id), metadata=m
        ),
    ),
}
OTHER_ROLE = {"producer": "worker", "worker": "admin", "admin": "producer"}


async def _snapshot(app: DispatcherApp) -> tuple[Any, Any]:
    c = app.components
    # Worker sightings reach Redis in a flush once a second: write the pending ones
    # first, so that the world's valid Lease cannot land its sighting between two
    # snapshots (it did, in a run slow enough to cross that second), while a
    # refused call that recorded one would still show.
    await c.workers.flush()
    async with c.runs.engine.connect() as conn:
        sql = {
            t.name: sorted(map(tuple, (await conn.execute(select(t))).all()), key=repr)
            for t in metadata.sorted_tables
        }
    client = c.index.client
    redis = {}
    async for key in client.scan_iter(match=c.index.keys.pattern()):
        kind = await client.type(key)
        if kind == "zset":
            redis[key] = await client.zrange(key, 0, -1, withscores=True)
        elif kind == "hash":
            redis[key] = await client.hgetall(key)
        else:
            redis[key] = kind
    return sql, redis


async def _code(call: Any) -> grpc.StatusCode:
    try:
        await call
        return C.OK
    except grpc.aio.AioRpcError as exc:
        return exc.code()


@pytest.mark.parametrize("rpc", sorted(CALLS))
async def test_refused_calls_get_their_code_and_change_nothing(
    secured: tuple[DispatcherApp, Tokens], rpc: str
) -> None:
    app, tokens = secured
    role, call = CALLS[rpc]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        world = await _world(app, tokens, channel)
        right = {"producer": tokens.producer, "worker": tokens.worker, "admin": tokens.admin}
        other_tenant = {
            "producer": tokens.other_tenant_producer,
            "worker": tokens.other_tenant_worker,
            "admin": tokens.other_tenant_admin,
        }
        cases = [
            ("no credentials", bearer(None), "", C.UNAUTHENTICATED),
            ("garbage", [("authorization", "Bearer nonsense")], "", C.UNAUTHENTICATED),
            ("revoked", bearer(tokens.revoked), "", C.UNAUTHENTICATED),
            ("wrong role", bearer(right[OTHER_ROLE[role]]), "", C.PERMISSION_DENIED),
            (
                "wrong tenant naming ours",
                bearer(other_tenant[role]),
                "tenant-a",
                C.PERMISSION_DENIED,
            ),
        ]
        for name, meta, ns, want in cases:
            before = await _snapshot(app)
            got = await _code(call(world, meta, ns))
            assert got == want, f"{rpc} with {name}: {got}"
            assert await _snapshot(app) == before, f"{rpc} with {name} changed state"
        got = await _code(call(world, bearer(right[role]), ""))
        assert got == C.OK, f"{rpc} with a valid credential: {got}"


@pytest.mark.parametrize(
    "rpc",
    [
        "GetStatus",
        "Cancel",
        "Heartbeat",
        "Ack",
        "Nack",
        "GetSchedule",
        "PauseSchedule",
        "ResumeSchedule",
        "DeleteSchedule",
    ],
)
async def test_another_tenants_job_or_schedule_is_not_found_and_unchanged(
    secured: tuple[DispatcherApp, Tokens], rpc: str
) -> None:
    app, tokens = secured
    role, call = CALLS[rpc]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        world = await _world(app, tokens, channel)
        other = tokens.other_tenant_producer if role == "producer" else tokens.other_tenant_worker
        before = await _snapshot(app)
        assert await _code(call(world, bearer(other), "")) == C.NOT_FOUND
        assert await _snapshot(app) == before


async def test_a_lease_token_only_works_for_the_worker_credential_that_leased_it(
    secured: tuple[DispatcherApp, Tokens],
) -> None:
    app, tokens = secured
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        world = await _world(app, tokens, channel)
        before = await _snapshot(app)
        for rpc in ("Heartbeat", "Ack", "Nack"):
            assert (
                await _code(CALLS[rpc][1](world, bearer(tokens.worker2), "")) == C.PERMISSION_DENIED
            )
        assert await _snapshot(app) == before
        assert await _code(CALLS["Ack"][1](world, bearer(tokens.worker), "")) == C.OK


async def test_a_stream_never_shows_another_tenants_jobs(
    secured: tuple[DispatcherApp, Tokens],
) -> None:
    app, tokens = secured
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        world = await _world(app, tokens, channel)
        stream = world.stub.StreamUpdates(
            pb.StreamUpdatesRequest(job_ids=[world.job_id]),
            metadata=bearer(tokens.other_tenant_producer),
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in stream:
                pass
        assert info.value.code() == C.NOT_FOUND
        # Tenant b follows its own queue "q": tenant a's job moving must not show up.
        queue_stream = world.stub.StreamUpdates(
            pb.StreamUpdatesRequest(queue="q"), metadata=bearer(tokens.other_tenant_producer)
        )
        reader = asyncio.ensure_future(anext(aiter(queue_stream)))
        await asyncio.sleep(0.3)
        assert await _code(CALLS["Ack"][1](world, bearer(tokens.worker), "")) == C.OK
        done, _ = await asyncio.wait([reader], timeout=2.0)
        queue_stream.cancel()
        assert not done, "a message about another tenant's job reached the stream"


async def test_health_is_open_and_reflection_is_open_only_when_served(
    secured: tuple[DispatcherApp, Tokens],
) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    app, _ = secured
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(  # type: ignore[attr-defined]
            health_pb2.HealthCheckRequest()
        )
        assert reply.status in (
            health_pb2.HealthCheckResponse.SERVING,
            health_pb2.HealthCheckResponse.NOT_SERVING,
        )
        from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

        call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo()  # type: ignore[operator, arg-type]
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        await call.done_writing()
        resp = await call.read()
        assert await call.read() == grpc.aio.EOF
        assert resp.list_services_response.service


async def test_the_streaming_rpc_is_authenticated_and_authorized_like_the_others(
    secured: tuple[DispatcherApp, Tokens],
) -> None:
    app, tokens = secured
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        world = await _world(app, tokens, channel)
        request = pb.StreamUpdatesRequest(job_ids=[world.job_id])
        for meta, want in [
            (bearer(None), C.UNAUTHENTICATED),
            (bearer(tokens.revoked), C.UNAUTHENTICATED),
            (bearer(tokens.worker), C.PERMISSION_DENIED),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in world.stub.StreamUpdates(request, metadata=meta):
                    pass
            assert info.value.code() == want
        stream = world.stub.StreamUpdates(request, metadata=bearer(tokens.producer))
        first = await anext(aiter(stream))
        stream.cancel()
        assert first.job_id == world.job_id


async def test_a_job_handed_to_a_waiting_lease_answers_to_that_leases_credential_only(
    secured: tuple[DispatcherApp, Tokens],
) -> None:
    app, tokens = secured
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = dispatcher_pb2_grpc.DispatcherServiceStub(channel)
        waiting = asyncio.ensure_future(
            stub.Lease(
                pb.LeaseRequest(worker_id="w", queues=["handed"], wait=Duration(seconds=20)),
                metadata=bearer(tokens.worker),
            )
        )
        await parked(app.components)  # the Lease has looked once and waits
        looks = record_lease_scripts(app.components.index)
        await stub.Enqueue(
            pb.EnqueueRequest(job=jpb.JobSpec(queue="handed", type="t")),
            metadata=bearer(tokens.producer),
        )
        (lease,) = (await asyncio.wait_for(waiting, 20)).leases
        assert looks == []  # handed over, not leased through lease.lua
        ack = pb.AckRequest(items=[pb.AckItem(lease_token=lease.lease_token)])
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Ack(ack, metadata=bearer(tokens.worker2))
        assert refused.value.code() == C.PERMISSION_DENIED
        await stub.Ack(ack, metadata=bearer(tokens.worker))
