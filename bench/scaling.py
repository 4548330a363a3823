"""How the dispatcher's costs grow with work, on Redis + PostgreSQL.

    python -m bench.scaling              # depths 10^3, 10^5, 10^6; N=10,000 (5-12 min)
    python -m bench.scaling --quick      # depths 10^3, 10^4, 10^5; N=1,000 (about 2 min)

One `dispatcher serve` replica (two for the replica figures) on a fresh
PostgreSQL database (dropped afterwards) and a key prefix of its own in one
Redis database (its keys deleted afterwards; nothing is flushed). In order:

1. throughput: N jobs queued with EnqueueBatch, then drained by 1, 2 and 4
   worker processes (bench/peers/dispatcher_worker.py), every job checked;
   and P concurrent producers making single Enqueue calls;
2. the same with two replicas on the same database and prefix, the workers
   and producers split between them;
3. queue depth: one queue filled to each depth (10^3, 10^5, 10^6 ready jobs)
   through the service layer in-process (EnqueueBatch's code path without
   gRPC, about 10x faster), then at each depth: sequential Enqueue, Lease(1)
   and Ack(1) calls through gRPC (wall time and the replica's CPU per call),
   EnqueueBatch(100) and Lease(100)+Ack per job, the same single operations
   in-process, the replica's RSS, Redis bytes per queued job (MEMORY USAGE of
   our keys, and the INFO used_memory delta), PostgreSQL bytes per job.

Writes OUT/scaling-latest.{md,json} and OUT/scaling-<time>.{md,json}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as redis_asyncio

from bench import probe
from bench.infra import pg_database
from bench.measure import check_all_ran
from bench.peers.base import ROOT, spawn, stop_processes
from bench.peers.dispatcher import (
    CONCURRENCY,
    RawProducer,
    payload,
    start_server,
    worker_command,
)
from bench.run import machine
from bench.scaling_depth import DepthProbe
from bench.scaling_report import render_markdown


@dataclass(frozen=True)
class Preset:
    depths: tuple[int, ...]
    jobs: int  # N, per drain
    ops: int  # calls per operation and depth
    drain_timeout: float


FULL = Preset((1_000, 100_000, 1_000_000), jobs=10_000, ops=300, drain_timeout=300)
QUICK = Preset((1_000, 10_000, 100_000), jobs=1_000, ops=100, drain_timeout=120)
DEEP = "deep"  # the queue filled to each depth
PRODUCERS = 4


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.scaling",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="smaller depths and N")
    p.add_argument("--depths", help="comma list of queue depths (1000,100000,1000000)")
    p.add_argument("--jobs", type=int, help="N, jobs per drain (10000)")
    p.add_argument("--ops", type=int, help="calls per operation and depth (300)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="output dir")
    p.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379/12",
        help="Redis database to use; only keys under a fresh prefix are written and deleted",
    )
    p.add_argument(
        "--pg-admin-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="PostgreSQL admin URL; a dispatcher_scale_* database is created and dropped",
    )
    return p.parse_args(argv)


# -- processes ------------------------------------------------------------------------


@dataclass
class Replica:
    proc: subprocess.Popen[bytes]
    address: str

    def cpu_s(self) -> float:
        """User + system CPU seconds of the replica process so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory_mb(self) -> tuple[float, float]:
        """Resident and peak resident set size, MB."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text().splitlines()
        kb = {ln.split(":")[0]: int(ln.split()[1]) for ln in status if ln.startswith("Vm")}
        return kb["VmRSS"] / 1024, kb["VmHWM"] / 1024


class Workers:
    """Dispatcher worker processes, each leasing from one replica."""

    def __init__(self, workdir: Path, redis_url: str) -> None:
        self.workdir = workdir
        self.redis_url = redis_url
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, addresses: list[str], count: int, queue: str) -> None:
        for k in range(count):
            argv = worker_command(addresses[k % len(addresses)], queue, CONCURRENCY)
            env = {"BENCH_REDIS_URL": self.redis_url}
            self.procs.append(spawn(argv, self.workdir, f"worker-{queue}-{k}", env))

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def stop(self) -> None:
        stop_processes(self.procs, signal.SIGTERM, 10)
        self.procs = []


# -- the run --------------------------------------------------------------------------


class Scaling:
    def __init__(self, args: argparse.Namespace, db_url: str, workdir: Path) -> None:
        base = QUICK if args.quick else FULL
        self.args = args
        self.depths = [int(d) for d in args.depths.split(",")] if args.depths else base.depths
        self.jobs: int = args.jobs or base.jobs
        self.ops: int = args.ops or base.ops
        self.drain_timeout = base.drain_timeout
        self.db_url = db_url
        self.workdir = workdir
        self.run_id = uuid.uuid4().hex[:8]
        self.prefix = f"bench-scale-{self.run_id}"
        self.redis = redis.Redis.from_url(args.redis_url)
        self.workers = Workers(workdir, args.redis_url)
        self.replicas: list[Replica] = []
        self.tags: list[str] = []
        self.result: dict[str, Any] = {
            "depth": [],
            "throughput": [],
            "concurrent_enqueue": [],
            "errors": [],
        }

    async def start_replica(self) -> Replica:
        label = f"server-{len(self.replicas) + 1}"
        proc, address = await start_server(
            self.workdir, label, self.db_url, self.args.redis_url, self.prefix
        )
        replica = Replica(proc, address)
        self.replicas.append(replica)
        producer = RawProducer(address)
        try:
            await producer.ready()
        finally:
            await producer.close()
        return replica

    def stop_replica(self, replica: Replica) -> None:
        stop_processes([replica.proc], signal.SIGTERM, 15)
        self.replicas.remove(replica)

    async def run(self) -> None:
        say(f"replica 1 on {self.db_url.rsplit('/', 1)[1]}, Redis prefix {self.prefix}")
        await self.start_replica()
        for w in (1, 2, 4):
            await self.guard(f"drain W={w}", self.drain(1, w))
        await self.guard("concurrent enqueue", self.concurrent_enqueue(1))
        say("replica 2")
        second = await self.start_replica()
        for w in (2, 4):
            await self.guard(f"drain, 2 replicas, W={w}", self.drain(2, w))
        await self.guard("concurrent enqueue, 2 replicas", self.concurrent_enqueue(2))
        self.stop_replica(second)
        await self.guard("queue depth", self.depth_series())

    async def guard(self, what: str, step: Awaitable[None]) -> None:
        """Run one step; a failure is recorded and the run goes on."""
        try:
            await step
        except Exception as exc:
            self.workers.stop()
            self.result["errors"].append(f"{what}: {type(exc).__name__}: {exc}")
            say(f"  {what} failed: {exc}")

    # -- throughput --------------------------------------------------------------

    async def drain(self, replicas: int, workers: int) -> None:
        tag = f"s{self.run_id}-r{replicas}w{workers}"
        self.tags.append(tag)
        n = self.jobs
        producer = RawProducer(self.replicas[0].address)
        try:
            for start in range(0, n, 500):
                bodies = [payload(tag, i, n) for i in range(start, min(n, start + 500))]
                await producer.enqueue_many(tag, bodies)
        finally:
            await producer.close()
        self.workers.start([r.address for r in self.replicas[:replicas]], workers, tag)
        try:
            await self.wait_count(tag, n)
            check_all_ran(self.redis, tag, n)
        finally:
            self.workers.stop()
        first = float(self.redis.get(probe.key(tag, "first")) or 0)
        done = float(self.redis.get(probe.key(tag, "done")) or 0)
        rate = n / (done - first)
        self.result["throughput"].append(
            {"replicas": replicas, "workers": workers, "jobs": n, "drain_per_s": rate}
        )
        say(f"  drain, {replicas} replica(s), W={workers}: {rate:,.0f} jobs/s")

    async def wait_count(self, tag: str, n: int) -> None:
        deadline = time.monotonic() + self.drain_timeout
        while (count := int(self.redis.get(probe.key(tag, "count")) or 0)) < n:
            if not self.workers.alive():
                raise RuntimeError(f"a worker process exited; {count}/{n} jobs ran")
            if time.monotonic() > deadline:
                raise RuntimeError(f"timeout: {count}/{n} jobs ran")
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # a duplicate delivery, if any, shows in the count

    async def concurrent_enqueue(self, replicas: int) -> None:
        per = max(50, self.jobs // 10)
        producers = [RawProducer(self.replicas[k % replicas].address) for k in range(PRODUCERS)]
        body = payload("cenq", 0, 0)

        async def produce(p: RawProducer) -> None:
            for _ in range(per):
                await p.enqueue("cenq", body)

        try:
            t = time.perf_counter()
            await asyncio.gather(*(produce(p) for p in producers))
            rate = PRODUCERS * per / (time.perf_counter() - t)
        finally:
            for p in producers:
                await p.close()
        self.result["concurrent_enqueue"].append(
            {"replicas": replicas, "producers": PRODUCERS, "enqueue_per_s": rate}
        )
        say(f"  {PRODUCERS} producers, {replicas} replica(s): {rate:,.0f} single enqueues/s")

    # -- depth ------------------------------------------------------------------------

    async def depth_series(self) -> None:
        replica = self.replicas[0]
        async with DepthProbe(self.db_url, self.args.redis_url, self.prefix, DEEP) as d:
            baseline = await d.baseline()
            for depth in self.depths:
                say(f"depth {depth:,}: filling ...")
                row: dict[str, Any] = {"depth": depth}
                row.update(await d.fill_to(depth))
                row.update(await d.storage(baseline, depth))  # before the operations add rows
                row["settle_s"] = await d.settle()
                row["grpc"] = await d.grpc_costs(replica.address, self.ops, replica.cpu_s)
                row["service"] = await d.service_costs(self.ops)
                rss, peak = replica.memory_mb()
                row["server_rss_mb"], row["server_peak_rss_mb"] = rss, peak
                self.result["depth"].append(row)
                say(
                    f"  enqueue {row['grpc']['enqueue']['p50_ms']:.2f} ms, "
                    f"lease {row['grpc']['lease']['p50_ms']:.2f} ms, RSS {rss:.0f} MB, "
                    f"Redis {row.get('redis_bytes_per_job', 0):.0f} B/job"
                )

    # -- cleanup ----------------------------------------------------------------------

    async def close(self) -> None:
        self.workers.stop()
        for replica in list(self.replicas):
            self.stop_replica(replica)
        patterns = [f"{self.prefix}:*"] + [f"{probe.PREFIX}:{t}:*" for t in self.tags]
        client = redis_asyncio.from_url(self.args.redis_url)
        try:
            for pattern in patterns:
                async for key in client.scan_iter(match=pattern, count=1000):
                    await client.unlink(key)
        finally:
            await client.aclose()
        self.redis.close()


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def write_outputs(out: Path, data: dict[str, Any]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    markdown = render_markdown(data)
    written = []
    for stem in (f"scaling-{stamp}", "scaling-latest"):
        (out / f"{stem}.md").write_text(markdown)
        (out / f"{stem}.json").write_text(json.dumps(data, indent=2) + "\n")
        written += [out / f"{stem}.md", out / f"{stem}.json"]
    print(markdown)
    return written


async def run_all(args: argparse.Namespace, db_url: str, workdir: Path) -> dict[str, Any]:
    s = Scaling(args, db_url, workdir)
    try:
        await s.run()
    finally:
        await s.close()
    return s.result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    workdir = args.out / "logs" / "scaling"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    started = time.monotonic()
    load = os.getloadavg()
    with pg_database(args.pg_admin_url, "dispatcher_scale") as db_url:
        result = asyncio.run(run_all(args, db_url, workdir))
    base = QUICK if args.quick else FULL
    result["meta"] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.scaling", *argv]),
        **machine(),
        "backend": "Redis + PostgreSQL (one fresh database), one Redis key prefix",
        "parameters": (
            f"N={args.jobs or base.jobs} jobs per drain, {CONCURRENCY} slots per worker "
            f"process, {args.ops or base.ops} calls per operation and depth"
        ),
        "load": f"{load[0]:.2f} at start, {os.getloadavg()[0]:.2f} at end (1 min)",
        "duration": f"{time.monotonic() - started:.0f} s",
    }
    for path in write_outputs(args.out, result):
        say(f"wrote {path}")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
