"""Measure one system; run by `bench.run` as its own process, one per system.

    python -m bench.measure CONFIG.json

The same phases for every system, against its own Redis database:

1. enqueue, one call per job: N jobs from one sequential producer (after a
   short warm-up); these N jobs stay queued;
2. drain: start W worker processes; every job's handler records itself
   (bench/probe.py); the rate is N / (last completion - first job start),
   and every job index must have run exactly once; the CPU each part of the
   system spent per job over the same span is recorded too (bench/cpu.py);
3. latency: with the workers idle, L jobs enqueued `interval` apart; each
   handler's start time minus the time just before its enqueue call (for
   the echo, which has no workers: one call's round trip, spaced the same);
4. workers stopped, enqueue N jobs with the batch API, if there is one (they
   are never run);
5. enqueue N jobs from C concurrent producer tasks in one process, each
   awaiting one job at a time, where the system's client has a path for it
   (ours: `Client(batch_window=...)`); never run either.

Phases 4 and 5 each run `repeats` times, N jobs every time, and report the
median rate: on 2 cores their N jobs take under two seconds, and one run's
figure moved by a third with the machine's moment (the jobs are never run, so
repeating them costs only the time).

Writes CONFIG's `result` path as JSON (a `bench.report.SystemResult`).
Standard library and redis-py only, plus the peer's own module.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import statistics
import sys
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import redis

from bench import cpu, probe
from bench.peers.base import Context, Peer
from bench.report import NO_BATCH_API, NOT_MEASURED, SystemResult, percentile

MARKER = "bench:owner"


class PhaseFailed(Exception):
    pass


def claim_db(url: str) -> None:
    """FLUSHDB this system's database, refusing if it holds data that is not ours."""
    r = redis.Redis.from_url(url)
    if r.dbsize() and not r.exists(MARKER):
        raise RuntimeError(
            f"{url} holds {r.dbsize()} keys not written by the benchmark; "
            "refusing to FLUSHDB it (choose another --redis-url base or clear it yourself)"
        )
    r.flushdb()
    r.set(MARKER, "dispatcher bench harness")


async def wait_count(r: redis.Redis, tag: str, n: int, within_s: float, peer: Peer) -> None:
    deadline = time.monotonic() + within_s
    while True:
        count = int(r.get(probe.key(tag, "count")) or 0)
        if count >= n:
            return
        if not peer.workers_alive():
            raise PhaseFailed(f"a worker process exited; {count}/{n} jobs ran")
        if time.monotonic() > deadline:
            raise PhaseFailed(f"timeout after {within_s:.0f}s: {count}/{n} jobs ran")
        await asyncio.sleep(0.01)


def check_all_ran(r: redis.Redis, tag: str, n: int) -> None:
    ran = r.bitcount(probe.key(tag, "bits"))
    count = int(r.get(probe.key(tag, "count")) or 0)
    if ran != n or count != n:
        raise PhaseFailed(f"{ran} distinct jobs of {n} ran, {count} handler calls")


async def seconds(work: Awaitable[None]) -> float:
    """How long `work` takes to finish."""
    t = time.perf_counter()
    await work
    return time.perf_counter() - t


async def phase_enqueue_single(peer: Peer, cfg: dict[str, Any], res: SystemResult) -> None:
    await peer.enqueue_single("warm", cfg["warmup"])
    n = cfg["jobs"]
    elapsed = await seconds(peer.enqueue_single("drain", n))
    res.metrics["enqueue_single_per_s"] = n / elapsed
    res.details["enqueue_single_s"] = elapsed


async def cpu_now(peer: Peer, r: redis.Redis) -> dict[str, float]:
    """CPU seconds used so far by each part of the system (see bench/cpu.py)."""
    parts = {"workers": cpu.tree_cpu_s(peer.worker_pids()), "redis": cpu.redis_cpu_s(r.info("cpu"))}
    return parts | await peer.service_cpu_s()


async def phase_drain(peer: Peer, r: redis.Redis, cfg: dict[str, Any], res: SystemResult) -> None:
    n = cfg["jobs"]
    spawned = time.time()
    peer.start_workers(cfg["workers"])
    # CPU is counted from the first job's start, so that start-up is left out.
    await wait_count(r, "drain", 1, cfg["drain_timeout"], peer)
    started = int(r.get(probe.key("drain", "count")) or 0)
    before = await cpu_now(peer, r)
    await wait_count(r, "drain", n, cfg["drain_timeout"], peer)
    after = await cpu_now(peer, r)
    res.details["drain_cpu_us_per_job"] = cpu.per_job_us(before, after, n - started)
    await asyncio.sleep(0.2)  # let a duplicate delivery, if any, show up in the count
    check_all_ran(r, "drain", n)
    first = float(r.get(probe.key("drain", "first")) or 0)
    done = float(r.get(probe.key("drain", "done")) or 0)
    res.metrics["drain_per_s"] = n / (done - first)
    res.details["drain_s"] = done - first
    res.details["drain_from_spawn_s"] = done - spawned
    res.details["drain_verified"] = True


async def spaced(n: int, interval: float) -> AsyncIterator[int]:
    """0 to n - 1, each `interval` seconds after the one before (on the first's
    schedule, so that a slow step does not push the rest back)."""
    start = time.perf_counter()
    for i in range(n):
        delay = start + i * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        yield i


async def phase_latency(peer: Peer, r: redis.Redis, cfg: dict[str, Any], res: SystemResult) -> None:
    await asyncio.sleep(cfg["settle"])  # workers go idle, into their normal wait
    n, interval = cfg["latency_jobs"], cfg["latency_interval"]
    sent: list[float] = []
    async for i in spaced(n, interval):
        sent.append(time.time())
        await peer.enqueue_one("lat", i, n)
    await wait_count(r, "lat", n, cfg["latency_timeout"], peer)
    starts = r.hgetall(probe.key("lat", "start"))
    lat_ms = [(float(starts[str(i).encode()]) - sent[i]) * 1000 for i in range(n)]
    res.metrics["latency_p50_ms"] = percentile(lat_ms, 50)
    res.metrics["latency_p99_ms"] = percentile(lat_ms, 99)
    res.details["latency_max_ms"] = max(lat_ms)


async def phase_round_trip(peer: Peer, cfg: dict[str, Any], res: SystemResult) -> None:
    """The reference's latency: one bare call's round trip, the calls spaced as
    the latency phase spaces its enqueues. An enqueue-to-start over one call per
    job cannot be shorter (the job crosses to the server and back out to a
    worker, and a durable system commits in between); and a call made after an
    idle gap costs more than one made back to back, which the rate measures."""
    n, interval = cfg["latency_jobs"], cfg["latency_interval"]
    took_ms: list[float] = []
    async for i in spaced(n, interval):
        took_ms.append(await seconds(peer.enqueue_one("lat", i, n)) * 1000)
    res.metrics["latency_p50_ms"] = percentile(took_ms, 50)
    res.metrics["latency_p99_ms"] = percentile(took_ms, 99)
    res.details["latency"] = "round trip of one bare call, calls spaced as the latency phase's"


async def median_rate(
    res: SystemResult, metric: str, n: int, repeats: int, run: Callable[[], Awaitable[None]]
) -> None:
    """Run `run` (n jobs) `repeats` times; the median jobs/s is the metric, and
    every run's rate is kept in the details, in order, as `<metric>_each`."""
    rates = [n / await seconds(run()) for _ in range(repeats)]
    res.metrics[metric] = statistics.median(rates)
    res.details[f"{metric}_each"] = rates


async def phase_enqueue_batch(peer: Peer, cfg: dict[str, Any], res: SystemResult) -> None:
    if peer.batch_api is None:
        res.missing["enqueue_batch_per_s"] = NO_BATCH_API
        return
    n, size = cfg["jobs"], cfg["batch_size"]
    await median_rate(
        res, "enqueue_batch_per_s", n, cfg["repeats"], lambda: peer.enqueue_batch("batch", n, size)
    )
    res.details["batch_api"] = f"{peer.batch_api}, {size} per call"


async def phase_enqueue_concurrent(peer: Peer, cfg: dict[str, Any], res: SystemResult) -> None:
    if peer.concurrent_api is None:
        res.missing["enqueue_concurrent_per_s"] = NOT_MEASURED
        return
    n, callers = cfg["jobs"], cfg["callers"]
    await median_rate(
        res,
        "enqueue_concurrent_per_s",
        n,
        cfg["repeats"],
        lambda: peer.enqueue_concurrent("conc", n, callers),
    )
    res.details["concurrent_api"] = f"{peer.concurrent_api}, {callers} callers"


def _fail(res: SystemResult, keys: list[str], exc: BaseException) -> None:
    text = str(exc) if isinstance(exc, PhaseFailed) else f"{type(exc).__name__}: {exc}"
    for k in keys:
        res.missing.setdefault(k, text)
    if not isinstance(exc, PhaseFailed):
        traceback.print_exc()


def save(cfg: dict[str, Any], res: SystemResult) -> None:
    """Write the result so far: if the harness stops us on its time limit, it keeps these."""
    Path(cfg["result"]).write_text(json.dumps(asdict(res), indent=2))


async def measure(peer: Peer, cfg: dict[str, Any], res: SystemResult) -> None:
    single, drain = ["enqueue_single_per_s"], ["drain_per_s"]
    lat = ["latency_p50_ms", "latency_p99_ms"]
    await peer.setup()
    try:
        try:
            await phase_enqueue_single(peer, cfg, res)
        except Exception as exc:
            _fail(res, single + drain + lat, exc)
        save(cfg, res)
        if peer.producer_only:
            try:
                await phase_round_trip(peer, cfg, res)
            except Exception as exc:
                _fail(res, lat, exc)
            return
        r = redis.Redis.from_url(cfg["redis_url"])
        try:
            if "enqueue_single_per_s" in res.metrics:
                await phase_drain(peer, r, cfg, res)
        except Exception as exc:
            _fail(res, drain + lat, exc)
        save(cfg, res)
        try:
            if "drain_per_s" in res.metrics:
                await phase_latency(peer, r, cfg, res)
        except Exception as exc:
            _fail(res, lat, exc)
        save(cfg, res)
        peer.stop_workers()
        try:
            await phase_enqueue_batch(peer, cfg, res)
        except Exception as exc:
            _fail(res, ["enqueue_batch_per_s"], exc)
        try:
            await phase_enqueue_concurrent(peer, cfg, res)
        except Exception as exc:
            _fail(res, ["enqueue_concurrent_per_s"], exc)
    finally:
        peer.stop_workers()
        await peer.teardown()


def load_peer(cfg: dict[str, Any]) -> Peer:
    module = importlib.import_module(cfg["module"])
    cls = getattr(module, cfg["cls"])
    ctx = Context(
        name=cfg["name"],
        redis_url=cfg["redis_url"],
        workdir=Path(cfg["workdir"]),
        batch_size=cfg["batch_size"],
        options=cfg.get("options", {}),
    )
    peer: Peer = cls(ctx)
    return peer


def main(argv: list[str]) -> int:
    cfg = json.loads(Path(argv[0]).read_text())
    res = SystemResult(cfg["name"], cfg["kind"], cfg.get("workers_label", ""))
    res.details["parameters"] = {
        k: cfg[k]
        for k in (
            "jobs",
            "workers",
            "latency_jobs",
            "latency_interval",
            "batch_size",
            "callers",
            "repeats",
        )
    }
    try:
        if cfg["redis_url"]:
            claim_db(cfg["redis_url"])
        peer = load_peer(cfg)
        res.details["versions"] = peer.versions()
        if peer.batch_api is None:  # said up front, so that a timeout later keeps it
            res.missing["enqueue_batch_per_s"] = NO_BATCH_API
        asyncio.run(measure(peer, cfg, res))
    except Exception as exc:
        traceback.print_exc()
        res.error = f"{type(exc).__name__}: {exc}"
    save(cfg, res)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
