"""Taskiq with taskiq-redis's RedisStreamBroker (acknowledged): `taskiq worker -w 2`.

Defaults otherwise (up to 100 concurrent async tasks per process). No batch API.
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import version

from taskiq_redis import RedisStreamBroker

from bench.peers.base import Peer
from bench.probe import AsyncProbe

_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/8")
broker = RedisStreamBroker(url=_URL)
_probe = AsyncProbe(_URL)


@broker.task(task_name="bench.noop")
async def noop(i: int, n: int, tag: str) -> None:
    await _probe.record(i, n, tag)


class TaskiqPeer(Peer):
    async def setup(self) -> None:
        await broker.startup()  # also creates the stream's consumer group

    async def teardown(self) -> None:
        await broker.shutdown()

    async def enqueue_one(self, tag: str, i: int, n: int) -> None:
        await noop.kiq(i, n, tag)

    def worker_commands(self, workers: int) -> list[list[str]]:
        return [
            [
                sys.executable,
                "-m",
                "taskiq",
                "worker",
                "bench.peers.taskiq:broker",
                "-w",
                str(workers),
                "--log-level",
                "WARNING",
            ]
        ]

    def versions(self) -> dict[str, str]:
        return {"taskiq": version("taskiq"), "taskiq-redis": version("taskiq-redis")}
