"""Per-namespace quotas: enqueue rate, live jobs, concurrent leases.

The enqueue rate is a token bucket in Redis (quota.lua), exact across
replicas. Live-job and lease counts come from SQL, cached for a second per
namespace, so concurrent calls on several replicas may overshoot a count quota
by what they do within that second. Quota settings are cached like queue
settings and refreshed every few seconds.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field

from dispatcher.clock import Clock
from dispatcher.domain import validation
from dispatcher.domain.errors import DispatchError, QuotaExceeded
from dispatcher.domain.models import NamespaceQuota
from dispatcher.store.redis.index import RedisIndex
from dispatcher.store.sql import quotas as sql
from dispatcher.store.sql.admin import audit
from dispatcher.store.sql.runs import RunStore

logger = logging.getLogger(__name__)
COUNT_TTL_S = 1.0
MAX_QUOTA = 1_000_000_000


@dataclass
class Quotas:
    runs: RunStore
    index: RedisIndex
    clock: Clock
    cache: dict[str, NamespaceQuota] = field(default_factory=dict)
    _counts: dict[tuple[str, str], tuple[float, int]] = field(default_factory=dict)

    async def refresh(self) -> None:
        self.cache = {q.namespace: q for q in await sql.all_quotas(self.runs)}

    def quota(self, ns: str) -> NamespaceQuota:
        return self.cache.get(ns, NamespaceQuota(ns))

    async def _count(self, ns: str, what: str) -> int:
        hit = self._counts.get((ns, what))
        if hit is not None and time.monotonic() - hit[0] < COUNT_TTL_S:
            return hit[1]
        n = await (sql.live_jobs if what == "live" else sql.leases)(self.runs, ns)
        self._counts[(ns, what)] = (time.monotonic(), n)
        return n

    async def check_enqueue(self, ns: str, n: int) -> None:
        """Raise QuotaExceeded (with a retry delay) if n more jobs break a quota."""
        q = self.quota(ns)
        if n <= 0:
            return
        if q.max_live_jobs:
            live = await self._count(ns, "live")
            if live + n > q.max_live_jobs:
                raise QuotaExceeded(
                    "the namespace has too many unfinished jobs",
                    {"quota": "max_live_jobs"},
                    retry_after_ms=1000,
                )
            # Count these at once: the cache must not let the next call in on old numbers.
            self._counts[(ns, "live")] = (time.monotonic(), live + n)
        if q.enqueue_rate_per_s:
            wait = await self.index.take_quota(
                ns, q.enqueue_rate_per_s, q.enqueue_burst, self.clock.now_ms(), n
            )
            if wait:
                raise QuotaExceeded(
                    "the namespace's enqueue rate is exceeded",
                    {"quota": "enqueue_rate"},
                    retry_after_ms=wait,
                )

    async def lease_room(self, ns: str, want: int) -> int:
        """How many of `want` leases the namespace may still take."""
        q = self.quota(ns)
        if not q.max_leases:
            return want
        room = q.max_leases - await self._count(ns, "leases")
        if room <= 0:
            raise QuotaExceeded(
                "the namespace holds its maximum of leases",
                {"quota": "max_leases"},
                retry_after_ms=1000,
            )
        self._counts[(ns, "leases")] = (time.monotonic(), q.max_leases - room + min(room, want))
        return min(room, want)

    async def set(self, namespace: str, changes: dict[str, float]) -> NamespaceQuota:
        ns = validation.namespace(namespace)
        out = validation.Violations()
        for name, value in changes.items():
            if name not in sql.FIELDS:
                out.add(name, "is not a namespace quota")
            elif not (math.isfinite(value) and 0 <= value <= MAX_QUOTA):
                out.add(name, f"must be between 0 and {MAX_QUOTA}")
        out.raise_if_any()
        now = self.clock.now_ms()
        async with self.runs.transaction() as tx:
            new = await sql.upsert(tx, ns, now, **changes)
            await audit(tx, now, "set_namespace_quotas", ns, ns, dict(changes))
        self.cache[ns] = new
        return new


async def refresh_forever(quotas: Quotas, interval_s: float = 2.0) -> None:
    while True:
        try:
            await quotas.refresh()
        except DispatchError as exc:
            logger.warning("could not refresh namespace quotas: %s", exc.reason)
        await asyncio.sleep(interval_s)
