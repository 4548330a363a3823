"""A dispatcher worker process for the benchmark.

    python -m bench.peers.dispatcher_worker ADDRESS QUEUES [--concurrency 10] [--client raw]
        [--event-loop auto]

It works the way an SDK worker does: one long-poll `Lease` at a time asking
for as many jobs as it has free slots (`max_jobs`), each job run as its own
task, and completions coalesced into batched `Ack` calls (one in flight; the
tokens that finish meanwhile go in the next one). The handler is the same
no-op as every peer's: `bench.probe.AsyncProbe.record`. It runs on the event
loop `Worker.run()` would choose (`--event-loop`, by default uvloop where
installed), as a worker started with `python -m worker_sdk run` does.

The seam for `worker_sdk.Worker`: a loop is a coroutine
`(address, queues, concurrency, handle, stop)` that runs `handle(payload)` for
every job it is given until `stop` is set, then finishes its work and returns;
`WORKERS` maps a `--client` name to one. Add an "sdk" entry there once the SDK
lands, and pass option "client": "sdk" in bench/peers/__init__.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable

import grpc
from google.protobuf import duration_pb2

from bench.probe import AsyncProbe, probe_url
from worker_sdk import event_loop
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2 as pb
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2_grpc

logger = logging.getLogger(__name__)
JOB_TYPE = "noop"  # as bench.peers.dispatcher.JOB_TYPE
Handler = Callable[[bytes], Awaitable[None]]  # the job payload -> done
Loop = Callable[[str, list[str], int, Handler, asyncio.Event], Awaitable[None]]
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}


class RawWorker:
    """Lease in batches, run with bounded concurrency, Ack in batches."""

    def __init__(
        self,
        stub: dispatcher_pb2_grpc.DispatcherServiceAsyncStub,
        queues: list[str],
        handler: Handler,
        concurrency: int,
    ) -> None:
        self._stub = stub
        self._queues = queues
        self._handler = handler
        self._free = concurrency
        self._freed = asyncio.Event()
        self._acks: asyncio.Queue[pb.AckItem] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._id = f"bench-{os.getpid()}"

    async def run(self, stop: asyncio.Event) -> None:
        acker = asyncio.create_task(self._ack_loop())
        poller = asyncio.create_task(self._poll_loop())
        await stop.wait()
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)
        await self._acks.join()
        acker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await acker

    async def _poll_loop(self) -> None:
        while True:
            while self._free == 0:
                self._freed.clear()
                await self._freed.wait()
            try:
                resp = await self._stub.Lease(
                    pb.LeaseRequest(
                        worker_id=self._id,
                        queues=self._queues,
                        max_jobs=self._free,
                        wait=duration_pb2.Duration(seconds=5),
                    ),
                    timeout=10,
                )
            except grpc.aio.AioRpcError as exc:
                logger.warning("Lease failed: %s", exc.code().name)
                await asyncio.sleep(0.2)
                continue
            for lease in resp.leases:
                self._free -= 1
                task = asyncio.create_task(self._run_one(lease))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _run_one(self, lease: pb.Lease) -> None:
        try:
            await self._handler(lease.job.payload)
            self._acks.put_nowait(pb.AckItem(lease_token=lease.lease_token))
        except Exception:
            logger.exception("handler failed for job %s", lease.job.id)
        finally:
            self._free += 1
            self._freed.set()

    async def _ack_loop(self) -> None:
        while True:
            items = [await self._acks.get()]
            while not self._acks.empty() and len(items) < 1000:
                items.append(self._acks.get_nowait())
            await self._ack(items)
            for _ in items:
                self._acks.task_done()

    async def _ack(self, items: list[pb.AckItem]) -> None:
        for attempt in range(5):
            try:
                resp = await self._stub.Ack(pb.AckRequest(items=items), timeout=10)
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in RETRYABLE:
                    logger.error("Ack of %d failed: %s", len(items), exc.code().name)
                    return
                await asyncio.sleep(0.1 * 2**attempt)
                continue
            for r in resp.results:
                if r.error.code:
                    logger.error("Ack refused: %s %s", r.error.reason, r.error.message)
            return


async def run_raw(
    address: str, queues: list[str], concurrency: int, handle: Handler, stop: asyncio.Event
) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = dispatcher_pb2_grpc.DispatcherServiceStub(channel)
        await RawWorker(stub, queues, handle, concurrency).run(stop)


async def run_sdk(
    address: str, queues: list[str], concurrency: int, handle: Handler, stop: asyncio.Event
) -> None:
    """The same loop through worker_sdk.Worker: batched leases, heartbeats and acks."""
    from datetime import timedelta

    from worker_sdk import ConnectOptions, JobContext, Worker, WorkerOptions, tune_for_service

    options = WorkerOptions(
        queues=tuple(queues), concurrency=concurrency, poll_wait=timedelta(seconds=5)
    )
    worker = Worker(options, ConnectOptions(address=address))

    @worker.handler(JOB_TYPE)
    async def noop(job: JobContext) -> None:
        await handle(job.payload)

    async with worker:
        tune_for_service()  # as Worker.run() does: this process is the worker
        await stop.wait()


WORKERS: dict[str, Loop] = {"raw": run_raw, "sdk": run_sdk}


def probe_handler() -> Handler:
    probe = AsyncProbe(probe_url())

    async def handle(payload: bytes) -> None:
        body = json.loads(payload)
        await probe.record(body["i"], body["n"], body["tag"])

    return handle


async def run(address: str, queues: list[str], concurrency: int, client: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await WORKERS[client](address, queues, concurrency, probe_handler(), stop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address")
    parser.add_argument("queues", help="comma-separated queue names")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--client", choices=sorted(WORKERS), default="raw")
    parser.add_argument("--event-loop", choices=event_loop.CHOICES, default="auto")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    _, new_loop = event_loop.loop_factory(args.event_loop)
    with asyncio.Runner(loop_factory=new_loop) as runner:
        runner.run(run(args.address, args.queues.split(","), args.concurrency, args.client))


if __name__ == "__main__":
    main()
