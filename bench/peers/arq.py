"""arq with its standard worker (`arq.worker.run_worker`), two processes, default settings.

Defaults matter here: max_jobs 10 per worker and poll_delay 0.5 s (an idle
worker polls the queue twice a second, which shows in its latency). No batch
API. arq pins redis<6, so this module runs under bench/.venv-arq (see
bench/README.md); it must not import anything from the dispatcher.

    python -m bench.peers.arq worker   # what `arq bench.peers.arq.WorkerSettings` runs,
                                       # with job logging at WARNING like the other peers
"""

from __future__ import annotations

import logging
import os
import sys
from importlib.metadata import version
from typing import Any

from arq import create_pool  # type: ignore[import-not-found]  # only in bench/.venv-arq
from arq.connections import RedisSettings  # type: ignore[import-not-found]

from bench.peers.base import Peer
from bench.probe import AsyncProbe

_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/5")
_probe = AsyncProbe(_URL)


async def noop(ctx: dict[str, Any], i: int, n: int, tag: str) -> None:
    await _probe.record(i, n, tag)


class WorkerSettings:
    functions = [noop]  # noqa: RUF012 - arq reads class attributes
    redis_settings = RedisSettings.from_dsn(_URL)


class ArqPeer(Peer):
    async def setup(self) -> None:
        self._pool = await create_pool(RedisSettings.from_dsn(self.ctx.redis_url))

    async def teardown(self) -> None:
        await self._pool.close()

    async def enqueue_one(self, tag: str, i: int, n: int) -> None:
        await self._pool.enqueue_job("noop", i, n, tag)

    def worker_commands(self, workers: int) -> list[list[str]]:
        return [[sys.executable, "-m", "bench.peers.arq", "worker"] for _ in range(workers)]

    def versions(self) -> dict[str, str]:
        return {"arq": version("arq"), "redis-py (arq venv)": version("redis")}


if __name__ == "__main__" and sys.argv[1:] == ["worker"]:
    from arq.worker import run_worker  # type: ignore[import-not-found]

    logging.basicConfig(level=logging.WARNING)
    run_worker(WorkerSettings)
