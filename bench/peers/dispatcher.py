"""Our dispatcher: a `dispatcher serve` process, a producer, and worker processes.

Backends (option "backend"): "embedded" (SQLite file + in-process Redis
emulation, the default `dispatcher serve`), "sqlite" (Redis + SQLite) and
"postgres" (Redis + PostgreSQL; the harness creates and drops the database).
The Redis keys carry a prefix of their own (option "redis_prefix") in this
system's own database.

The client side is behind two small seams, so that `worker_sdk.Client` and
`worker_sdk.Worker` can replace the raw generated stubs without touching the
harness: a `Producer` (enqueue one payload, enqueue many) picked from
`PRODUCERS`, and the worker process `bench.peers.dispatcher_worker`, whose
`--client` picks a loop from its `WORKERS`. Option "client" chooses both
("sdk" by default, "raw" for the generated stubs alone).

The batch phase asks for the BASIC view of the new jobs (`JobView.BASIC`: ids,
states and times, no payload sent back), as a bulk producer that needs only
the ids would; through the SDK its jobs, which share queue, type and options,
go with those once as the call's `defaults` (the raw producer sends each job
in full). RQ's `enqueue_many` builds its Job objects on the client and gets
nothing back from Redis but the pipeline's replies.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Protocol

import grpc

from bench.cpu import backends_cpu_s, tree_cpu_s
from bench.infra import pg_connect
from bench.peers.base import Peer, spawn, stop_processes
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2 as pb
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2_grpc
from worker_sdk._proto.dispatch.v1 import job_pb2 as jpb

WORKER_QUEUES = "drain,lat"  # "warm" and "batch" jobs are never leased
# Jobs in flight per worker process. The benchmark's handler is an async no-op, so
# this is set like Taskiq's default (max_async_tasks=100), the other asyncio
# worker here; it also lets each Lease and Ack call carry a batch worth sending.
CONCURRENCY = 100
JOB_TYPE = "noop"
BATCH_WINDOW_MS = 1.0  # how long the SDK client gathers concurrent enqueues


def payload(tag: str, i: int, n: int) -> bytes:
    """The job body every dispatcher job carries: what the probe handler records."""
    return json.dumps({"i": i, "n": n, "tag": tag}, separators=(",", ":")).encode()


def spec(queue: str, body: bytes) -> jpb.JobSpec:
    return jpb.JobSpec(queue=queue, type=JOB_TYPE, payload=body, content_type="application/json")


# -- the producer seam ----------------------------------------------------------


class Producer(Protocol):
    """What the harness needs from a producer client."""

    async def ready(self) -> None:
        """Return once the server serves (its index may still be building at start)."""

    async def enqueue(self, queue: str, body: bytes) -> None:
        """One job, one call; durable when it returns."""

    async def enqueue_many(self, queue: str, bodies: Sequence[bytes]) -> None:
        """Many jobs in one call; raises if any is refused."""

    async def enqueue_concurrent(self, queue: str, bodies: Sequence[bytes], callers: int) -> None:
        """One job per call from `callers` concurrent tasks."""

    async def close(self) -> None: ...


async def from_callers(
    bodies: Sequence[bytes], callers: int, one: Callable[[bytes], Awaitable[object]]
) -> None:
    """`callers` tasks, each taking the next body and awaiting its enqueue, until none is left."""
    left = iter(bodies)

    async def caller() -> None:
        for body in left:
            await one(body)

    await asyncio.gather(*(caller() for _ in range(callers)))


class RawProducer:
    """A producer on the generated stubs: `Enqueue` and `EnqueueBatch`."""

    concurrent_api = "concurrent Enqueue calls (raw stubs)"

    def __init__(self, address: str) -> None:
        self._channel = grpc.aio.insecure_channel(address)
        self.stub = dispatcher_pb2_grpc.DispatcherServiceStub(self._channel)

    async def ready(self, within_s: float = 60.0) -> None:
        deadline = time.monotonic() + within_s
        while True:
            try:
                await self.stub.Lease(pb.LeaseRequest(worker_id="bench", queues=["warm-up"]))
                return
            except grpc.aio.AioRpcError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)

    async def enqueue(self, queue: str, body: bytes) -> None:
        await self.stub.Enqueue(pb.EnqueueRequest(job=spec(queue, body)), timeout=30)

    async def enqueue_many(self, queue: str, bodies: Sequence[bytes]) -> None:
        request = pb.EnqueueBatchRequest(
            jobs=[spec(queue, b) for b in bodies], view=pb.JOB_VIEW_BASIC
        )
        resp = await self.stub.EnqueueBatch(request, timeout=60)
        bad = [r.error for r in resp.results if r.error.code]
        if bad:
            raise RuntimeError(f"{len(bad)} items refused, first: {bad[0].reason}")

    async def enqueue_concurrent(self, queue: str, bodies: Sequence[bytes], callers: int) -> None:
        await from_callers(bodies, callers, lambda body: self.enqueue(queue, body))

    async def close(self) -> None:
        await self._channel.close()


class SdkProducer:
    """The same through worker_sdk.Client: `enqueue` and `enqueue_many`; concurrent
    calls through a second client that coalesces them (`batch_window`)."""

    concurrent_api = f"Client(batch_window={BATCH_WINDOW_MS:g} ms).enqueue"

    def __init__(self, address: str) -> None:
        from worker_sdk import Client, ConnectOptions

        self.client = Client(ConnectOptions(address=address))
        self._raw = RawProducer(address)
        self._address = address

    async def ready(self, within_s: float = 60.0) -> None:
        await self._raw.ready(within_s)

    async def enqueue(self, queue: str, body: bytes) -> None:
        from worker_sdk import JobOptions

        await self.client.enqueue(
            queue, JOB_TYPE, body, JobOptions(content_type="application/json")
        )

    async def enqueue_many(self, queue: str, bodies: Sequence[bytes]) -> None:
        from worker_sdk import DispatcherError, JobOptions, JobRequest, JobView

        options = JobOptions(content_type="application/json")
        results = await self.client.enqueue_many(
            [JobRequest(queue, JOB_TYPE, b, options) for b in bodies], view=JobView.BASIC
        )
        bad = [r for r in results if isinstance(r, DispatcherError)]
        if bad:
            raise RuntimeError(f"{len(bad)} items refused, first: {bad[0]}")

    async def enqueue_concurrent(self, queue: str, bodies: Sequence[bytes], callers: int) -> None:
        from worker_sdk import Client, ConnectOptions, JobOptions

        options = JobOptions(content_type="application/json")
        window = timedelta(milliseconds=BATCH_WINDOW_MS)
        async with Client(ConnectOptions(address=self._address), batch_window=window) as client:
            await from_callers(
                bodies, callers, lambda body: client.enqueue(queue, JOB_TYPE, body, options)
            )

    async def close(self) -> None:
        await self.client.close()
        await self._raw.close()


PRODUCERS: dict[str, type[RawProducer] | type[SdkProducer]] = {
    "raw": RawProducer,
    "sdk": SdkProducer,
}


def worker_command(address: str, queues: str, concurrency: int, client: str = "raw") -> list[str]:
    """The argv of one worker process (see bench/peers/dispatcher_worker.py)."""
    return [sys.executable, "-m", "bench.peers.dispatcher_worker", address, queues,
            "--concurrency", str(concurrency), "--client", client]  # fmt: skip


# -- the server -----------------------------------------------------------------


def server_command(database_url: str, redis_url: str, prefix: str) -> list[str]:
    """`dispatcher serve` on any free port; an empty redis_url is the in-process emulation."""
    cmd = [sys.executable, "-m", "dispatcher", "serve", "--host", "127.0.0.1", "--port", "0",
           "--database-url", database_url, "--redis-prefix", prefix]  # fmt: skip
    return cmd + (["--redis-url", redis_url] if redis_url else [])


def _port_in(log_path: Path) -> int | None:
    try:
        m = re.search(r"listening on [\w.:\[\]-]+?:(\d+)", log_path.read_text())
    except FileNotFoundError:
        return None
    return int(m.group(1)) if m else None


async def wait_for_port(
    log_path: Path, proc: subprocess.Popen[bytes], within_s: float = 120
) -> int:
    """The port a server prints ("... listening on HOST:PORT") in its log."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if port := _port_in(log_path):
            return port
        if proc.poll() is not None:
            break
        await asyncio.sleep(0.05)
    raise RuntimeError(f"server did not start; see {log_path}")


async def start_server(
    workdir: Path, label: str, database_url: str, redis_url: str, prefix: str
) -> tuple[subprocess.Popen[bytes], str]:
    """Start one dispatcher replica; returns the process and its address."""
    proc = spawn(server_command(database_url, redis_url, prefix), workdir, label)
    port = await wait_for_port(workdir / f"{label}.log", proc)
    return proc, f"127.0.0.1:{port}"


async def backend_pids(database_url: str) -> list[int]:
    """The PostgreSQL server processes serving this database's connections now
    (the dispatcher's pool replaces them every 30 s: `cpu.backends_cpu_s`
    counts the ones that exit too). Only meaningful when PostgreSQL runs on
    this machine."""
    conn = await pg_connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    return [r["pid"] for r in rows]


# -- the peer -------------------------------------------------------------------


class DispatcherPeer(Peer):
    batch_api = "EnqueueBatch"

    async def setup(self) -> None:
        opts = self.ctx.options
        db_url = opts.get("database_url") or f"sqlite:///{self.ctx.workdir}/dispatcher.db"
        redis_url = "" if opts["backend"] == "embedded" else self.ctx.redis_url
        self._server, self.address = await start_server(
            self.ctx.workdir, "server", db_url, redis_url, opts["redis_prefix"]
        )
        self._client = opts.get("client", "sdk")
        self._producer = PRODUCERS[self._client](self.address)
        self.concurrent_api = self._producer.concurrent_api
        await self._producer.ready()

    async def teardown(self) -> None:
        await self._producer.close()
        stop_processes([self._server], signal.SIGTERM, grace=15)

    async def enqueue_one(self, tag: str, i: int, n: int) -> None:
        await self._producer.enqueue(tag, payload(tag, i, n))

    async def enqueue_concurrent(self, tag: str, n: int, callers: int) -> None:
        bodies = [payload(tag, i, n) for i in range(n)]
        await self._producer.enqueue_concurrent(tag, bodies, callers)

    async def enqueue_batch(self, tag: str, n: int, size: int) -> None:
        for start in range(0, n, size):
            bodies = [payload(tag, i, n) for i in range(start, min(n, start + size))]
            await self._producer.enqueue_many(tag, bodies)

    async def service_cpu_s(self) -> dict[str, float]:
        parts = {"server": tree_cpu_s([self._server.pid])}
        db_url = self.ctx.options.get("database_url") or ""
        if db_url.startswith("postgresql"):
            parts["postgresql"] = backends_cpu_s(await backend_pids(db_url))
        return parts

    def worker_commands(self, workers: int) -> list[list[str]]:
        return [
            worker_command(self.address, WORKER_QUEUES, CONCURRENCY, self._client)
            for _ in range(workers)
        ]

    def versions(self) -> dict[str, str]:
        return {"grpcio": version("grpcio"), "protobuf": version("protobuf")}
