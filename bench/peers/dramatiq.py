"""Dramatiq with its RedisBroker and default middleware: `dramatiq -p 2` (8 threads each).

No batch API: group() enqueues one message per member. An idle Redis consumer
polls with backoff up to `worker_timeout` (1 s by default), which shows in its
latency.
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import version

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench.peers.base import Peer
from bench.probe import Probe

QUEUE = "bench"

broker = RedisBroker(url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/6"))  # type: ignore[no-untyped-call]
dramatiq.set_broker(broker)
_probe: Probe | None = None


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def noop(i: int, n: int, tag: str) -> None:
    global _probe
    if _probe is None:
        _probe = Probe(os.environ["BENCH_REDIS_URL"])
    _probe.record(i, n, tag)


class DramatiqPeer(Peer):
    async def enqueue_one(self, tag: str, i: int, n: int) -> None:
        noop.send(i, n, tag)

    async def teardown(self) -> None:
        broker.close()

    def worker_commands(self, workers: int) -> list[list[str]]:
        return [
            [
                sys.executable,
                "-m",
                "dramatiq",
                "bench.peers.dramatiq",
                "-p",
                str(workers),
                "-Q",
                QUEUE,
            ]
        ]

    def versions(self) -> dict[str, str]:
        return {"dramatiq": version("dramatiq")}
