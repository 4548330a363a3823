"""The small interface every measured system implements, and worker process handling.

A peer enqueues no-op jobs `(i, n, tag)` whose handler calls
`bench.probe.Probe.record(i, n, tag)`, and starts its standard worker as
subprocesses. `bench.measure` drives every peer through the same phases.

Standard library and redis-py only (arq's separate virtualenv imports this too).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Context:
    """What the harness hands a peer."""

    name: str
    redis_url: str  # redis://host:port/<db> of this system only ("" for the echo)
    workdir: Path  # logs and scratch files of this system
    batch_size: int = 100
    options: dict[str, Any] = field(default_factory=dict)


class Peer:
    """One system under test.

    Subclasses implement `enqueue_one` and `worker_commands`, and
    `enqueue_batch` when `batch_api` names the system's batch API (None when
    it has none). All enqueue methods are coroutines; synchronous clients
    simply block inside them, as nothing else runs meanwhile.
    """

    batch_api: str | None = None
    concurrent_api: str | None = None  # set by systems whose client coalesces concurrent calls
    stop_signal: int = signal.SIGTERM
    producer_only = False  # True for the echo reference: no workers, no drain

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._procs: list[subprocess.Popen[bytes]] = []

    async def setup(self) -> None:
        """Connect producers; start servers the system needs besides Redis."""

    async def teardown(self) -> None:
        """Close what setup opened. The harness flushes the Redis database itself."""

    async def enqueue_one(self, tag: str, i: int, n: int) -> None:
        raise NotImplementedError

    async def enqueue_single(self, tag: str, n: int) -> None:
        """Enqueue n jobs, one call per job, sequentially."""
        for i in range(n):
            await self.enqueue_one(tag, i, n)

    async def enqueue_batch(self, tag: str, n: int, size: int) -> None:
        raise NotImplementedError

    async def enqueue_concurrent(self, tag: str, n: int, callers: int) -> None:
        """Enqueue n jobs from `callers` concurrent tasks, each awaiting one job at a time."""
        raise NotImplementedError

    def worker_commands(self, workers: int) -> list[list[str]]:
        """One argv per process to start; together they make `workers` worker processes."""
        raise NotImplementedError

    def versions(self) -> dict[str, str]:
        return {}

    # -- worker processes --------------------------------------------------

    def start_workers(self, workers: int) -> None:
        for k, argv in enumerate(self.worker_commands(workers)):
            self._procs.append(self.spawn(argv, f"worker-{k}"))

    def spawn(self, argv: list[str], label: str) -> subprocess.Popen[bytes]:
        """Start a process of this system; see `spawn`."""
        return spawn(argv, self.ctx.workdir, label, {"BENCH_REDIS_URL": self.ctx.redis_url})

    def stop_workers(self, grace: float = 10.0) -> None:
        stop_processes(self._procs, self.stop_signal, grace)
        self._procs = []

    def workers_alive(self) -> bool:
        return all(p.poll() is None for p in self._procs)

    def worker_pids(self) -> list[int]:
        """The worker processes started (their children are found from them)."""
        return [p.pid for p in self._procs]

    async def service_cpu_s(self) -> dict[str, float]:
        """CPU seconds used so far by the system's own servers besides Redis and
        its workers, by part (the dispatcher: its server and PostgreSQL)."""
        return {}


def spawn(
    argv: list[str], workdir: Path, label: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a process in its own session, output to <workdir>/<label>.log.

    Its process group id goes to <workdir>/pgids, so that the harness can
    kill what is left if the measurement process dies or times out.
    """
    full_env = dict(os.environ)
    full_env.update(env or {})
    paths = [str(ROOT), full_env.get("PYTHONPATH")]
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    log = open(workdir / f"{label}.log", "ab")  # the child keeps its own copy
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    log.close()
    with open(workdir / "pgids", "a") as f:
        f.write(f"{proc.pid}\n")
    return proc


def stop_processes(procs: list[subprocess.Popen[bytes]], sig: int, grace: float) -> None:
    """Signal each process, wait up to `grace`, then SIGKILL each one's whole group."""
    for p in procs:
        if p.poll() is None:
            try:
                p.send_signal(sig)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for p in procs:
        kill_group(p.pid)
        if p.poll() is None:
            p.wait(5)


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def script(name: str) -> str:
    """A console script of the interpreter running us (its virtualenv's bin/)."""
    return str(Path(sys.executable).parent / name)
