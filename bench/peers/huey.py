"""Huey with RedisHuey (blocking pop): `huey_consumer -k process -w 2`.

No batch API: `task.map()` enqueues one message per item.
"""

from __future__ import annotations

import os
from importlib.metadata import version

from huey import RedisHuey  # type: ignore[import-untyped]

from bench.peers.base import Peer, script
from bench.probe import Probe

huey = RedisHuey("bench", url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/7"))
_probe: Probe | None = None


@huey.task()  # type: ignore[untyped-decorator]
def noop(i: int, n: int, tag: str) -> None:
    global _probe
    if _probe is None:
        _probe = Probe(os.environ["BENCH_REDIS_URL"])
    _probe.record(i, n, tag)


class HueyPeer(Peer):
    async def enqueue_one(self, tag: str, i: int, n: int) -> None:
        noop(i, n, tag)

    def worker_commands(self, workers: int) -> list[list[str]]:
        return [
            [
                script("huey_consumer"),
                "bench.peers.huey.huey",
                "-k",
                "process",
                "-w",
                str(workers),
                "-q",
            ]
        ]

    def versions(self) -> dict[str, str]:
        return {"huey": version("huey")}
