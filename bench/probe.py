"""What every benchmark job does: record that it ran, in Redis, and nothing else.

Each system's no-op handler calls `Probe.record(i, n, tag)` (or the async
twin). One pipeline per job: the first start time of the tag (SET NX), a bit
per job index (so the harness can check that every job ran, once), a counter,
and for latency jobs the handler start time (`time.time()`, the same clock the
producer reads before its enqueue call). The job that brings the counter to
`n` also stamps the completion time.

Only the standard library and redis-py are used here: this module is imported
by worker processes of every system, including arq's, which runs in its own
virtualenv with an older redis-py (see bench/README.md).
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis

PREFIX = "bench:probe"


def key(tag: str, part: str) -> str:
    """The Redis key of one part ("count", "bits", "first", "done", "start") of a tag."""
    return f"{PREFIX}:{tag}:{part}"


def _queue(pipe: Any, i: int, tag: str, started: float) -> None:
    pipe.set(key(tag, "first"), repr(started), nx=True)
    if tag == "lat":
        pipe.hset(key(tag, "start"), str(i), repr(started))
    pipe.setbit(key(tag, "bits"), i, 1)
    pipe.incr(key(tag, "count"))


class Probe:
    """Synchronous recorder, one Redis connection per process (safe across fork)."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._pid = -1
        self._client: redis.Redis | None = None

    def _redis(self) -> redis.Redis:
        if self._client is None or self._pid != os.getpid():
            self._client = redis.Redis.from_url(self._url)
            self._pid = os.getpid()
        return self._client

    def record(self, i: int, n: int, tag: str) -> None:
        started = time.time()
        r = self._redis()
        pipe = r.pipeline(transaction=False)
        _queue(pipe, i, tag, started)
        count = pipe.execute()[-1]
        if count == n:
            r.set(key(tag, "done"), repr(time.time()))


class AsyncProbe:
    """The same for asyncio handlers (arq, Taskiq, the dispatcher's worker)."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._pid = -1
        self._client: Any = None

    def _redis(self) -> Any:
        if self._client is None or self._pid != os.getpid():
            import redis.asyncio as aredis

            self._client = aredis.Redis.from_url(self._url)
            self._pid = os.getpid()
        return self._client

    async def record(self, i: int, n: int, tag: str) -> None:
        started = time.time()
        r = self._redis()
        pipe = r.pipeline(transaction=False)
        _queue(pipe, i, tag, started)
        count = (await pipe.execute())[-1]
        if count == n:
            await r.set(key(tag, "done"), repr(time.time()))


def probe_url() -> str:
    """The Redis URL (with its database number) that the harness gave this system."""
    return os.environ["BENCH_REDIS_URL"]
