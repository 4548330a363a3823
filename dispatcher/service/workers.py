"""Worker liveness: when each worker was last seen calling Lease or Heartbeat.

Kept apart from leases (a worker may be alive with no lease). Sightings are
collected in memory and written to Redis in one pipeline per second, so the
hot path pays nothing; losing a second of sightings in a crash is harmless.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from dispatcher.clock import Clock
from dispatcher.domain.errors import DispatchError
from dispatcher.store.redis.index import RedisIndex

logger = logging.getLogger(__name__)

FORGET_AFTER_MS = 24 * 3600 * 1000


class WorkerRegistry:
    def __init__(self, index: RedisIndex, clock: Clock) -> None:
        self.index = index
        self.clock = clock
        self._seen: dict[str, dict[str, int]] = defaultdict(dict)

    def saw(self, namespace: str, worker_id: str) -> None:
        self._seen[namespace][worker_id] = self.clock.now_ms()

    async def flush(self) -> None:
        if not self._seen:
            return
        seen, self._seen = dict(self._seen), defaultdict(dict)
        await self.index.touch_workers(seen, self.clock.now_ms() - FORGET_AFTER_MS)


async def flush_forever(registry: WorkerRegistry, interval_s: float = 1.0) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            await registry.flush()
        except DispatchError as exc:
            logger.warning("could not record worker sightings: %s", exc.reason)
