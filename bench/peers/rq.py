"""RQ, with its SimpleWorker (jobs in the worker process) or its default forking Worker.

Batch API: `Queue.enqueue_many` (one Redis pipeline per call).
"""

from __future__ import annotations

import os
from importlib.metadata import version

from bench.peers.base import Peer, script
from bench.probe import Probe

QUEUE = "bench"
_probe: Probe | None = None


def noop(i: int, n: int, tag: str) -> None:
    """The benchmark job: record that it ran."""
    global _probe
    if _probe is None:
        _probe = Probe(os.environ["BENCH_REDIS_URL"])
    _probe.record(i, n, tag)


class RQPeer(Peer):
    batch_api = "Queue.enqueue_many"

    async def setup(self) -> None:
        import redis
        from rq import Queue

        self._conn = redis.Redis.from_url(self.ctx.redis_url)
        self._queue = Queue(QUEUE, connection=self._conn)

    async def teardown(self) -> None:
        self._conn.close()

    async def enqueue_one(self, tag: str, i: int, n: int) -> None:
        self._queue.enqueue(noop, i, n, tag)

    async def enqueue_batch(self, tag: str, n: int, size: int) -> None:
        from rq import Queue

        for start in range(0, n, size):
            self._queue.enqueue_many(
                [Queue.prepare_data(noop, (i, n, tag)) for i in range(start, min(n, start + size))]
            )

    def worker_commands(self, workers: int) -> list[list[str]]:
        cls = self.ctx.options["worker_class"]
        return [
            [
                script("rq"),
                "worker",
                "-w",
                cls,
                "-u",
                self.ctx.redis_url,
                "-q",
                "-n",
                f"bench-{k}-{os.getpid()}",
                QUEUE,
            ]
            for k in range(workers)
        ]

    def versions(self) -> dict[str, str]:
        return {"rq": version("rq"), "redis-py": version("redis")}
