"""The dispatcher and workers as separate processes, killed and restarted."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf import duration_pb2

from tests.e2e.conftest import DispatcherProcess, Stack, free_port, read_ledger, start_worker
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2 as pb
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2_grpc
from worker_sdk._proto.dispatch.v1 import job_pb2 as jpb

pytestmark = pytest.mark.slow
if TYPE_CHECKING:
    from worker_sdk._proto.dispatch.v1.dispatcher_pb2_grpc import DispatcherServiceAsyncStub as Stub


async def eventually(check: Callable[[], Any], timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or check}")


async def states(stub: Stub, ids: list[str]) -> Counter[int]:
    out: Counter[int] = Counter()
    for jid in ids:
        out[(await stub.GetStatus(pb.GetStatusRequest(job_id=jid))).job.state] += 1
    return out


async def enqueue(stub: Stub, n: int, **kw: Any) -> list[str]:
    resp = await stub.EnqueueBatch(
        pb.EnqueueBatchRequest(
            jobs=[jpb.JobSpec(queue="q", type="t", payload=str(i).encode(), **kw) for i in range(n)]
        )
    )
    return [r.job.id for r in resp.results]


async def test_a_worker_process_completes_jobs_from_a_dispatcher_process(
    stack: Stack, tmp_path: Path, processes: list[Any]
) -> None:
    d = DispatcherProcess(stack, free_port())
    processes.append(d.proc)
    async with grpc.aio.insecure_channel(d.address) as ch:
        stub = dispatcher_pb2_grpc.DispatcherServiceStub(ch)
        ids = await enqueue(stub, 50)
        ledger = tmp_path / "ledger"
        processes.append(start_worker(d.address, "q", ledger, 0, 4))

        async def all_done() -> bool:
            return (await states(stub, ids))[jpb.JOB_STATE_SUCCEEDED] == 50

        await eventually(all_done, what="50 jobs to succeed")
    acked = Counter(job for kind, job, _ in read_ledger(ledger) if kind == "acked")
    assert set(acked) == set(ids) and set(acked.values()) == {1}


async def test_a_sigkilled_worker_holding_leases_has_each_job_redelivered_and_completed_once(
    stack: Stack, tmp_path: Path, processes: list[Any]
) -> None:
    d = DispatcherProcess(stack, free_port())
    processes.append(d.proc)
    ledger = tmp_path / "ledger"
    async with grpc.aio.insecure_channel(d.address) as ch:
        stub = dispatcher_pb2_grpc.DispatcherServiceStub(ch)
        ids = await enqueue(stub, 20, lease_duration={"seconds": 2}, max_attempts=3)
        holder = start_worker(d.address, "q", ledger, 30, 20)
        processes.append(holder)
        await eventually(lambda: len(read_ledger(ledger)) == 20, what="the holder to start 20 jobs")
        holder.kill()
        holder.wait(10)
        killed_at = time.monotonic()
        processes.append(start_worker(d.address, "q", ledger, 0, 4))

        async def all_done() -> bool:
            return (await states(stub, ids))[jpb.JOB_STATE_SUCCEEDED] == 20

        await eventually(all_done, what="every job to be redelivered and succeed")
        redelivered_within = time.monotonic() - killed_at
        jobs = [(await stub.GetStatus(pb.GetStatusRequest(job_id=i))).job for i in ids]
    assert {j.attempt for j in jobs} == {2}
    acked = Counter(job for kind, job, _ in read_ledger(ledger) if kind == "acked")
    assert set(acked) == set(ids) and set(acked.values()) == {1}
    assert redelivered_within < 30  # far sooner than the holder's 30 s jobs would have ended


async def test_a_sigkilled_dispatcher_loses_no_acknowledged_job(
    stack: Stack, tmp_path: Path, processes: list[Any]
) -> None:
    port = free_port()
    d = DispatcherProcess(stack, port)
    processes.append(d.proc)
    acknowledged: list[str] = []
    async with grpc.aio.insecure_channel(d.address) as ch:
        stub = dispatcher_pb2_grpc.DispatcherServiceStub(ch)

        async def produce() -> None:
            n = 0
            while True:
                n += 1
                try:
                    resp = await stub.Enqueue(
                        pb.EnqueueRequest(
                            job=jpb.JobSpec(queue="q", type="t", idempotency_key=f"k{n}")
                        ),
                        timeout=2,
                    )
                    acknowledged.append(resp.job.id)
                except grpc.aio.AioRpcError:
                    return  # the dispatcher died under us: this one is indeterminate

        producer = asyncio.create_task(produce())
        await eventually(lambda: len(acknowledged) >= 200, what="200 acknowledged enqueues")
        d.kill()
        await asyncio.wait_for(producer, timeout=10)
    d2 = DispatcherProcess(stack, port)
    processes.append(d2.proc)
    ledger = tmp_path / "ledger"
    async with grpc.aio.insecure_channel(d2.address) as ch:
        stub = dispatcher_pb2_grpc.DispatcherServiceStub(ch)
        processes.append(start_worker(d2.address, "q", ledger, 0, 4))

        async def all_done() -> bool:
            return (await states(stub, acknowledged))[jpb.JOB_STATE_SUCCEEDED] == len(acknowledged)

        await eventually(all_done, what="every acknowledged job to succeed after the restart")
    acked = Counter(job for kind, job, _ in read_ledger(ledger) if kind == "acked")
    assert set(acknowledged) <= set(acked)
    assert set(acked.values()) == {1}


async def test_after_redis_is_wiped_and_the_dispatcher_restarts_jobs_run_in_priority_order_once(
    stack: Stack, tmp_path: Path, processes: list[Any]
) -> None:
    port = free_port()
    d = DispatcherProcess(stack, port)
    processes.append(d.proc)
    prios = [jpb.PRIORITY_LOW, jpb.PRIORITY_CRITICAL, jpb.PRIORITY_DEFAULT, jpb.PRIORITY_HIGH] * 5
    async with grpc.aio.insecure_channel(d.address) as ch:
        stub = dispatcher_pb2_grpc.DispatcherServiceStub(ch)
        ids = [
            (
                await stub.Enqueue(
                    pb.EnqueueRequest(job=jpb.JobSpec(queue="q", type="t", priority=p))
                )
            ).job.id
            for p in prios
        ]
        held = (await stub.Lease(pb.LeaseRequest(worker_id="w", queues=["q"], max_jobs=2))).leases
    d.kill()
    if stack.redis is not None:
        stack.redis.flushall()  # the embedded emulation died with the process anyway
    d2 = DispatcherProcess(stack, port)
    processes.append(d2.proc)
    async with grpc.aio.insecure_channel(d2.address) as ch:
        stub = dispatcher_pb2_grpc.DispatcherServiceStub(ch)
        got = (
            await stub.Lease(
                pb.LeaseRequest(
                    worker_id="w", queues=["q"], max_jobs=100, wait=duration_pb2.Duration(seconds=5)
                )
            )
        ).leases
        order = [prios[ids.index(le.job.id)] for le in got]
        assert order == sorted(order)
        assert len(got) == 18 and not ({le.job.id for le in got} & {h.job.id for h in held})
        for lease in [*held, *got]:  # the held leases survived the wipe and the restart
            await stub.Ack(pb.AckRequest(items=[pb.AckItem(lease_token=lease.lease_token)]))
        assert (await states(stub, ids))[jpb.JOB_STATE_SUCCEEDED] == 20


async def test_sigterm_ends_a_waiting_long_poll_with_an_empty_answer_and_exits_cleanly(
    stack: Stack, processes: list[Any]
) -> None:
    d = DispatcherProcess(stack, free_port())
    processes.append(d.proc)
    async with grpc.aio.insecure_channel(d.address) as ch:
        stub = dispatcher_pb2_grpc.DispatcherServiceStub(ch)
        poll = asyncio.ensure_future(
            stub.Lease(
                pb.LeaseRequest(
                    worker_id="w", queues=["q"], wait=duration_pb2.Duration(seconds=25)
                ),
                timeout=30,
            )
        )
        await asyncio.sleep(0.5)
        started = time.monotonic()
        code = await asyncio.to_thread(d.terminate)
        resp = await poll
    assert list(resp.leases) == []
    assert code == 0
    assert time.monotonic() - started < 10
