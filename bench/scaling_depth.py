"""The queue-depth part of `bench.scaling`: fill one queue, time operations, read memory.

The fill and the in-process figures use the dispatcher's own service layer
(`dispatcher.app.Components`, the objects a replica wires together) on the
replica's database and Redis prefix: the same code path as EnqueueBatch,
Lease and Ack, without gRPC in front.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Self

import grpc
import redis.asyncio as redis_asyncio

from bench.infra import pg_connect
from bench.peers.dispatcher import JOB_TYPE, spec
from bench.scaling_report import op_stats
from dispatcher.app import Components
from dispatcher.clock import SystemClock
from dispatcher.domain.errors import DispatchError
from dispatcher.domain.models import AckItem, JobSpec, LeaseRequest
from dispatcher.service.state import Phase
from dispatcher.store.redis.index import RedisIndex
from dispatcher.store.redis.keys import Keys
from dispatcher.store.sql.engine import create_engine
from dispatcher.store.sql.runs import RunStore
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2 as pb
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2_grpc

NAMESPACE = "default"
BODY = b'{"i":0,"n":0,"tag":"deep"}'
FILL_BATCH = 1000
FILL_TASKS = 2
BATCH = 100  # jobs per EnqueueBatch and per Lease in the batch figures
BATCH_CALLS = 10


class DepthProbe:
    """Holds a replica's components in this process for one queue; `async with` it."""

    def __init__(self, db_url: str, redis_url: str, prefix: str, queue: str) -> None:
        self.db_url = db_url
        self.queue = queue
        self.keys = Keys(prefix)
        self.client: Any = redis_asyncio.from_url(redis_url, decode_responses=True)
        self.c = Components(
            runs=RunStore(create_engine(db_url)),
            index=RedisIndex(self.client, self.keys),
            clock=SystemClock(),
        )
        self.c.state.phase = Phase.SERVING  # the index exists: the replica built it

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.c.runs.dispose()
        await self.client.aclose()

    # -- filling ----------------------------------------------------------------------

    async def depth(self) -> int:
        return int(await self.client.zcard(self.keys.ready(NAMESPACE, self.queue)))

    async def fill_to(self, depth: int) -> dict[str, float]:
        """Enqueue through the service layer until the queue holds `depth` ready jobs."""
        missing = depth - await self.depth()
        t = time.perf_counter()
        left = max(0, missing)

        async def filler() -> None:
            nonlocal left
            while left > 0:
                n = min(FILL_BATCH, left)
                left -= n
                specs = [JobSpec(queue=self.queue, type=JOB_TYPE, payload=BODY)] * n
                results = await self.c.dispatcher.enqueue_batch(NAMESPACE, specs)
                errors = [r for r in results if isinstance(r, DispatchError)]
                if errors:
                    raise RuntimeError(f"fill: {len(errors)} refused, first: {errors[0]}")

        await asyncio.gather(*(filler() for _ in range(FILL_TASKS)))
        elapsed = time.perf_counter() - t
        out = {"filled": float(max(0, missing)), "fill_s": elapsed}
        if missing > 0:
            out["fill_per_s"] = missing / elapsed
        return out

    async def settle(self) -> float:
        """VACUUM (ANALYZE) the tables a fill grew, and return its seconds.

        A fill of 10^6 rows sets off autovacuum at a moment nobody picks; when it
        fell inside the measurements it took a core from them (two runs showed
        single Enqueue, and Lease and Ack, 1.6-1.9x slower at 10^6 while the same
        calls in-process stayed flat). Measured after this, every depth is
        measured on a table in the state autovacuum would leave it in.
        """
        conn = await pg_connect(self.db_url)
        t = time.perf_counter()
        try:
            await conn.execute("VACUUM (ANALYZE) runs, run_events")
        finally:
            await conn.close()
        return time.perf_counter() - t

    # -- per-operation cost -----------------------------------------------------------

    async def grpc_costs(
        self, address: str, calls: int, cpu_s: Callable[[], float]
    ) -> dict[str, Any]:
        """Sequential calls through one replica: Enqueue, Lease(1), Ack(1), and batches."""
        async with grpc.aio.insecure_channel(address) as channel:
            stub = dispatcher_pb2_grpc.DispatcherServiceStub(channel)
            one = pb.EnqueueRequest(job=spec(self.queue, BODY))
            lease_one = pb.LeaseRequest(worker_id="scale", queues=[self.queue], max_jobs=1)
            # A Lease(1) may come back empty with jobs in the queue: when the
            # replica's reconciler raced a lease and put its job back (counted).
            tokens: list[str] = []

            async def enqueue() -> None:
                await stub.Enqueue(one, timeout=30)

            async def lease() -> None:
                resp = await stub.Lease(lease_one, timeout=30)
                tokens.extend(le.lease_token for le in resp.leases)

            async def ack() -> None:
                item = pb.AckItem(lease_token=tokens.pop())
                await stub.Ack(pb.AckRequest(items=[item]), timeout=30)

            out: dict[str, Any] = {}
            out["enqueue"] = await timed(calls, enqueue, cpu_s)
            out["lease"] = await timed(calls, lease, cpu_s)
            out["lease_empty"] = calls - len(tokens)
            out["ack"] = await timed(len(tokens), ack, cpu_s)
            out.update(await self._grpc_batches(stub))
        return out

    async def _grpc_batches(self, stub: Any) -> dict[str, float]:
        jobs = [spec(self.queue, BODY)] * BATCH
        t = time.perf_counter()
        for _ in range(BATCH_CALLS):
            await stub.EnqueueBatch(pb.EnqueueBatchRequest(jobs=jobs), timeout=60)
        enqueue_s = time.perf_counter() - t
        request = pb.LeaseRequest(worker_id="scale", queues=[self.queue], max_jobs=BATCH)
        t = time.perf_counter()
        leased = 0
        for _ in range(BATCH_CALLS):
            resp = await stub.Lease(request, timeout=60)
            items = [pb.AckItem(lease_token=le.lease_token) for le in resp.leases]
            leased += len(items)
            await stub.Ack(pb.AckRequest(items=items), timeout=60)
        lease_s = time.perf_counter() - t
        return {
            "enqueue_batch_us_per_job": enqueue_s / (BATCH * BATCH_CALLS) * 1e6,
            "lease_ack_batch_us_per_job": lease_s / max(1, leased) * 1e6,
        }

    async def service_costs(self, calls: int) -> dict[str, Any]:
        """The same single operations in-process, through the service layer."""
        d = self.c.dispatcher
        job = JobSpec(queue=self.queue, type=JOB_TYPE, payload=BODY)
        request = LeaseRequest(NAMESPACE, "scale-inproc", [self.queue], 1, 0, None)
        tokens: list[str] = []

        async def enqueue() -> None:
            await d.enqueue(NAMESPACE, job)

        async def lease() -> None:
            tokens.extend(g.token for g in await d.lease(request))

        async def ack() -> None:
            await d.ack(NAMESPACE, [AckItem(tokens.pop())])

        out: dict[str, Any] = {"enqueue": await timed(calls, enqueue, None)}
        out["lease"] = await timed(calls, lease, None)
        out["lease_empty"] = calls - len(tokens)
        out["ack"] = await timed(len(tokens), ack, None)
        return out

    # -- storage ----------------------------------------------------------------------

    async def baseline(self) -> dict[str, float]:
        return {"used_memory": await self._used_memory(), "sql_bytes": await self._sql_bytes()}

    async def storage(self, baseline: dict[str, float], depth: int) -> dict[str, float]:
        """Bytes per queued job: Redis (our keys, and server-wide INFO), PostgreSQL."""
        ours = 0
        async for key in self.client.scan_iter(match=self.keys.pattern(), count=1000):
            ours += int(await self.client.memory_usage(key, samples=0) or 0)
        ready = int(
            await self.client.memory_usage(self.keys.ready(NAMESPACE, self.queue), samples=0) or 0
        )
        used = await self._used_memory()
        sql = await self._sql_bytes()
        return {
            "redis_ready_zset_bytes": float(ready),
            "redis_prefix_bytes": float(ours),
            "redis_bytes_per_job": ready / depth,
            "redis_info_bytes_per_job": (used - baseline["used_memory"]) / depth,
            "sql_bytes": sql,
            "sql_bytes_per_job": (sql - baseline["sql_bytes"]) / depth,
        }

    async def _used_memory(self) -> float:
        info = await self.client.info("memory")
        return float(info["used_memory"])

    async def _sql_bytes(self) -> float:
        from sqlalchemy import text

        async with self.c.runs.engine.connect() as conn:
            size = await conn.scalar(text("SELECT pg_database_size(current_database())"))
        return float(size or 0)


async def timed(
    calls: int, op: Callable[[], Awaitable[None]], cpu_s: Callable[[], float] | None
) -> dict[str, float]:
    """Call `op` `calls` times in sequence; per-call wall time and server CPU."""
    seconds: list[float] = []
    cpu0 = cpu_s() if cpu_s else 0.0
    for _ in range(calls):
        t = time.perf_counter()
        await op()
        seconds.append(time.perf_counter() - t)
    return op_stats(seconds, calls, cpu_s() - cpu0 if cpu_s else None)
