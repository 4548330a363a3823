"""Redis or PostgreSQL going away: calls fail UNAVAILABLE, and the dispatcher recovers alone."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2

from tests.backends import Backend, PostgresDatabase, selected_backends
from tests.e2e.conftest import DispatcherProcess, RedisServer, Stack, free_port
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2 as pb
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2_grpc
from worker_sdk._proto.dispatch.v1 import job_pb2 as jpb

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif("real" not in selected_backends(), reason="needs the real servers"),
]


@pytest.fixture
def real_stack(postgres: PostgresDatabase, tmp_path: Path) -> Iterator[Stack]:
    asyncio.run(Backend("real", postgres.url, "").truncate_sql())
    redis = RedisServer(tmp_path)
    try:
        yield Stack("real", postgres.url, redis)
    finally:
        redis.proc.kill()
        redis.proc.wait(10)


async def _until_ok(call: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_with_redis_down_calls_are_unavailable_and_work_again_once_it_returns(
    real_stack: Stack, tmp_path: Path, processes: list[Any]
) -> None:
    assert real_stack.redis is not None
    d = DispatcherProcess(real_stack, free_port())
    processes.append(d.proc)
    async with grpc.aio.insecure_channel(d.address) as ch:
        stub = dispatcher_pb2_grpc.DispatcherServiceStub(ch)
        before = (await stub.Enqueue(pb.EnqueueRequest(job=jpb.JobSpec(queue="q", type="t")))).job
        real_stack.redis.proc.kill()
        real_stack.redis.proc.wait(10)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Lease(pb.LeaseRequest(worker_id="w", queues=["q"]), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "Traceback" not in (info.value.details() or "")
        # Enqueue still commits to SQL while Redis is down; the index catches up later.
        during = (await stub.Enqueue(pb.EnqueueRequest(job=jpb.JobSpec(queue="q", type="t")))).job
        # Redis comes back empty on the same port: the dispatcher rebuilds its index.
        real_stack.redis.start()
        leased: list[str] = []
        deadline = time.monotonic() + 30
        while len(leased) < 2 and time.monotonic() < deadline:
            resp = await _until_ok(
                lambda: stub.Lease(
                    pb.LeaseRequest(
                        worker_id="w",
                        queues=["q"],
                        max_jobs=10,
                        wait=duration_pb2.Duration(seconds=1),
                    )
                )
            )
            leased += [le.job.id for le in resp.leases]
        assert sorted(leased) == sorted([before.id, during.id])


async def test_after_the_database_drops_every_connection_at_most_one_call_fails_and_retryably(
    real_stack: Stack, postgres: PostgresDatabase, processes: list[Any]
) -> None:
    d = DispatcherProcess(real_stack, free_port())
    processes.append(d.proc)
    async with grpc.aio.insecure_channel(d.address) as ch:
        stub = dispatcher_pb2_grpc.DispatcherServiceStub(ch)
        await stub.Enqueue(pb.EnqueueRequest(job=jpb.JobSpec(queue="q", type="t")))
        killed = await postgres.drop_connections()
        assert killed >= 1
        # No pre-ping: the first call that meets a dead connection fails, retryably,
        # and the pool then replaces every connection opened before it.
        answers = []
        for _ in range(3):
            try:
                answers.append(
                    await stub.Enqueue(pb.EnqueueRequest(job=jpb.JobSpec(queue="q", type="t")))
                )
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
        assert len(answers) >= 2
        job = answers[-1]
        status = await stub.GetStatus(pb.GetStatusRequest(job_id=job.job.id))
        assert status.job.state == jpb.JOB_STATE_QUEUED
