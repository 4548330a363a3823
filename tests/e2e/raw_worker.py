"""A worker written against the generated stubs only, run as its own process by e2e tests.

Usage: python -m tests.e2e.raw_worker ADDRESS QUEUE LEDGER SLEEP_S CONCURRENCY

Each slot long-polls Lease, appends "start <job> <attempt>" to LEDGER, sleeps,
acks, and appends "acked <job> <attempt>" once the Ack call returned OK.
"""

from __future__ import annotations

import asyncio
import os
import sys

import grpc
from google.protobuf import duration_pb2

from worker_sdk._proto.dispatch.v1 import dispatcher_pb2 as pb
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2_grpc


def _log(ledger: str, line: str) -> None:
    with open(ledger, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


async def slot(
    stub: dispatcher_pb2_grpc.DispatcherServiceAsyncStub,
    queue: str,
    ledger: str,
    sleep_s: float,
    worker_id: str,
) -> None:
    while True:
        try:
            resp = await stub.Lease(
                pb.LeaseRequest(
                    worker_id=worker_id,
                    queues=[queue],
                    max_jobs=1,
                    wait=duration_pb2.Duration(seconds=2),
                ),
                timeout=5,
            )
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.2)
            continue
        for lease in resp.leases:
            _log(ledger, f"start {lease.job.id} {lease.job.attempt}")
            await asyncio.sleep(sleep_s)
            try:
                await stub.Ack(
                    pb.AckRequest(items=[pb.AckItem(lease_token=lease.lease_token)]), timeout=5
                )
                _log(ledger, f"acked {lease.job.id} {lease.job.attempt}")
            except grpc.aio.AioRpcError as exc:
                _log(ledger, f"refused {lease.job.id} {lease.job.attempt} {exc.code().name}")


async def main() -> None:
    address, queue, ledger, sleep_s, concurrency = sys.argv[1:6]
    async with grpc.aio.insecure_channel(address) as channel:
        stub = dispatcher_pb2_grpc.DispatcherServiceStub(channel)
        await asyncio.gather(
            *(
                slot(stub, queue, ledger, float(sleep_s), f"raw-{os.getpid()}-{i}")
                for i in range(int(concurrency))
            )
        )


if __name__ == "__main__":
    asyncio.run(main())
