"""Rough rates of the core dispatch path, through gRPC, against a dispatcher process.

    python -m bench.core_rates                       # embedded: SQLite + in-process Redis emulation
    python -m bench.core_rates --redis-url redis://127.0.0.1:6379/0 \
        --database-url postgresql://postgres@127.0.0.1:5432/bench

Measures: single Enqueue calls from one sequential producer; EnqueueBatch of
100; lease+ack throughput with concurrent leasers taking batches; and the
enqueue-call to lease-response latency with an idle leaser waiting. The full
side-by-side benchmark against other queues is a separate harness.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from google.protobuf import duration_pb2

from worker_sdk._proto.dispatch.v1 import dispatcher_pb2 as pb
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2_grpc
from worker_sdk._proto.dispatch.v1 import job_pb2 as jpb

ROOT = Path(__file__).resolve().parents[1]


def start_dispatcher(args: argparse.Namespace, workdir: str) -> tuple[subprocess.Popen[str], int]:
    cmd = [
        sys.executable,
        "-m",
        "dispatcher",
        "serve",
        "--port",
        "0",
        "--database-url",
        args.database_url or f"sqlite:///{workdir}/bench.db",
        "--redis-prefix",
        f"bench{int(time.time())}",
    ]
    if args.redis_url:
        cmd += ["--redis-url", args.redis_url]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if m := re.search(r"listening on [\d.]+:(\d+)", line):
            return proc, int(m.group(1))
    raise RuntimeError("dispatcher did not start")


def spec(i: int) -> jpb.JobSpec:
    return jpb.JobSpec(queue="bench", type="noop", payload=str(i).encode())


async def drain(
    stub: dispatcher_pb2_grpc.DispatcherServiceAsyncStub, total: int, leasers: int
) -> float:
    done = 0
    started = time.perf_counter()

    async def leaser(n: int) -> None:
        nonlocal done
        while done < total:
            resp = await stub.Lease(
                pb.LeaseRequest(
                    worker_id=f"b{n}",
                    queues=["bench"],
                    max_jobs=50,
                    wait=duration_pb2.Duration(nanos=200_000_000),
                )
            )
            if not resp.leases:
                continue
            await stub.Ack(
                pb.AckRequest(items=[pb.AckItem(lease_token=le.lease_token) for le in resp.leases])
            )
            done += len(resp.leases)

    await asyncio.gather(*(leaser(n) for n in range(leasers)))
    return total / (time.perf_counter() - started)


async def measure(port: int, n_single: int, n_batch: int) -> dict[str, float]:
    out: dict[str, float] = {}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = dispatcher_pb2_grpc.DispatcherServiceStub(ch)
        for _ in range(100):  # wait for SERVING, warm up
            try:
                await stub.Lease(pb.LeaseRequest(worker_id="warm", queues=["warm"]))
                break
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.1)
        t = time.perf_counter()
        for i in range(n_single):
            await stub.Enqueue(pb.EnqueueRequest(job=spec(i)))
        out["enqueue_single_per_s"] = n_single / (time.perf_counter() - t)
        out["lease_ack_single_enqueued_per_s"] = await drain(stub, n_single, 4)
        t = time.perf_counter()
        for start in range(0, n_batch, 100):
            await stub.EnqueueBatch(
                pb.EnqueueBatchRequest(jobs=[spec(i) for i in range(start, start + 100)])
            )
        out["enqueue_batch100_per_s"] = n_batch / (time.perf_counter() - t)
        out["lease_ack_drain_per_s"] = await drain(stub, n_batch, 4)
        out.update(await latency(stub))
    return out


async def latency(
    stub: dispatcher_pb2_grpc.DispatcherServiceAsyncStub, n: int = 200
) -> dict[str, float]:
    sent: dict[bytes, float] = {}
    got: list[float] = []

    async def leaser() -> None:
        while len(got) < n:
            resp = await stub.Lease(
                pb.LeaseRequest(
                    worker_id="lat",
                    queues=["lat"],
                    max_jobs=10,
                    wait=duration_pb2.Duration(seconds=5),
                )
            )
            now = time.perf_counter()
            for le in resp.leases:
                got.append(now - sent[le.job.payload])
            if resp.leases:
                await stub.Ack(
                    pb.AckRequest(
                        items=[pb.AckItem(lease_token=le.lease_token) for le in resp.leases]
                    )
                )

    task = asyncio.create_task(leaser())
    await asyncio.sleep(0.5)
    for i in range(n):
        key = str(i).encode()
        sent[key] = time.perf_counter()
        await stub.Enqueue(
            pb.EnqueueRequest(job=jpb.JobSpec(queue="lat", type="noop", payload=key))
        )
        await asyncio.sleep(0.01)
    await task
    got.sort()
    return {
        "enqueue_to_lease_p50_ms": statistics.median(got) * 1000,
        "enqueue_to_lease_p99_ms": got[int(len(got) * 0.99) - 1] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", default="")
    parser.add_argument("--redis-url", default="")
    parser.add_argument("--single", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        proc, port = start_dispatcher(args, workdir)
        try:
            results = asyncio.run(measure(port, args.single, args.batch))
        finally:
            proc.terminate()
            proc.wait(20)
    for k, v in results.items():
        print(f"{k:36s} {v:10.1f}")


if __name__ == "__main__":
    main()
