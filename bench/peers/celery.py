"""Celery with the Redis broker: `-P solo` (two worker processes) or `-P prefork -c 2`.

Settings: results ignored (no backend), and `--without-gossip --without-mingle
--without-heartbeat`, the usual advice for a Redis broker. No batch API: a
group() or chunks() still publishes one message per task.
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import version

from celery import Celery  # type: ignore[import-untyped]

from bench.peers.base import Peer
from bench.probe import Probe

QUEUE = "bench"

app = Celery("bench", broker=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/3"))
app.conf.update(
    task_ignore_result=True,
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
_probe: Probe | None = None


@app.task(name="bench.noop")  # type: ignore[untyped-decorator]
def noop(i: int, n: int, tag: str) -> None:
    global _probe
    if _probe is None:
        _probe = Probe(os.environ["BENCH_REDIS_URL"])
    _probe.record(i, n, tag)


class CeleryPeer(Peer):
    async def enqueue_one(self, tag: str, i: int, n: int) -> None:
        noop.apply_async((i, n, tag))

    async def teardown(self) -> None:
        app.close()

    def worker_commands(self, workers: int) -> list[list[str]]:
        base = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.peers.celery",
            "worker",
            "-Q",
            QUEUE,
            "-l",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
        if self.ctx.options["pool"] == "solo":
            return [[*base, "-P", "solo", "-n", f"solo{k}@%h"] for k in range(workers)]
        return [[*base, "-P", "prefork", "-c", str(workers), "-n", "prefork@%h"]]

    def versions(self) -> dict[str, str]:
        return {"celery": version("celery"), "kombu": version("kombu")}
