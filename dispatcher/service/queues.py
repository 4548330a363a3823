"""Queue settings: pause and resume, maximum depth (back-pressure).

Pausing is enforced in Redis by lease.lua (the paused flag shares the queue's
hash tag), so it takes effect on every replica at once. The maximum depth is
checked at Enqueue against the Redis index (ready + scheduled) using settings
each replica caches from SQL and refreshes every few seconds; concurrent
enqueues on several replicas may overshoot the limit by their batch sizes.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from dispatcher.clock import Clock
from dispatcher.domain import validation
from dispatcher.domain.errors import DispatchError, QueueFull
from dispatcher.domain.models import QUEUE_LIMIT_FIELDS, JobSpec, QueueSettings
from dispatcher.service.index_behind import IndexBehind
from dispatcher.store.redis.index import RedisIndex
from dispatcher.store.sql import queues as sql_queues
from dispatcher.store.sql.admin import audit
from dispatcher.store.sql.runs import RunStore

logger = logging.getLogger(__name__)

REFRESH_S = 2.0
RETRY_AFTER_MS = 1000
MAX_DEPTH_LIMIT = 100_000_000
MAX_LIMIT = 1_000_000


@dataclass
class QueueControl:
    runs: RunStore
    index: RedisIndex
    clock: Clock
    cache: dict[tuple[str, str], QueueSettings] = field(default_factory=dict)
    # Index writes still to land after answered Enqueues: a depth check counts them.
    behind: IndexBehind | None = None

    async def refresh(self) -> None:
        """Reload every queue's settings from SQL and mirror the paused flags to Redis."""
        settings = await sql_queues.all_settings(self.runs)
        self.cache = {(s.namespace, s.name): s for s in settings}
        await self.index.mirror_settings(settings)

    def settings(self, ns: str, queue: str) -> QueueSettings:
        return self.cache.get((ns, queue), QueueSettings(ns, queue))

    async def _change(self, action: str, ns: str, queue: str, **kw: object) -> QueueSettings:
        ns = validation.namespace(ns)
        validation.check_name(queue, "queue")
        now = self.clock.now_ms()
        async with self.runs.transaction() as tx:
            new = await sql_queues.upsert(tx, ns, queue, now, **kw)
            await audit(tx, now, action, ns, queue, {k: v for k, v in kw.items()})
        self.cache[(ns, queue)] = new
        await self.index.mirror_settings([new])
        return new

    async def pause(self, ns: str, queue: str) -> QueueSettings:
        return await self._change("pause_queue", ns, queue, paused=True)

    async def resume(self, ns: str, queue: str) -> QueueSettings:
        return await self._change("resume_queue", ns, queue, paused=False)

    async def set_max_depth(self, ns: str, queue: str, max_depth: int) -> QueueSettings:
        return await self.set_limits(ns, queue, {"max_depth": max_depth})

    async def set_limits(self, ns: str, queue: str, limits: dict[str, float]) -> QueueSettings:
        """Set any of max_depth and the lease limits (0 removes a limit)."""
        out = validation.Violations()
        for name, value in limits.items():
            high = MAX_DEPTH_LIMIT if name == "max_depth" else MAX_LIMIT
            if name not in QUEUE_LIMIT_FIELDS:
                out.add(name, "is not a queue limit")
            elif not (math.isfinite(value) and 0 <= value <= high):
                out.add(name, f"must be between 0 and {high}")
        out.raise_if_any()
        return await self._change("set_queue_limits", ns, queue, **limits)

    async def full_queues(self, ns: str, specs: Sequence[JobSpec]) -> set[str]:
        """The queues among `specs` that these jobs would push past their maximum depth."""
        wanted = Counter(s.queue for s in specs)
        full = set()
        for queue, n in wanted.items():
            limit = self.settings(ns, queue).max_depth
            if limit <= 0:
                continue
            if self.behind is not None:
                await self.behind.caught_up()
            ready, scheduled, _ = await self.index.depth(ns, queue)
            if ready + scheduled + n > limit:
                full.add(queue)
        return full


def queue_full(queue: str) -> QueueFull:
    return QueueFull(
        "the queue is at its maximum depth; retry later",
        {"queue": queue},
        retry_after_ms=RETRY_AFTER_MS,
    )


async def refresh_forever(control: QueueControl, interval_s: float = REFRESH_S) -> None:
    while True:
        try:
            await control.refresh()
        except DispatchError as exc:
            logger.warning("could not refresh queue settings: %s", exc.reason)
        await asyncio.sleep(interval_s)
