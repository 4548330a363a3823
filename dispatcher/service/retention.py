"""The retention sweeper: finished jobs (and their events, edges and delivered
webhooks) are kept for a configurable time, then deleted in bounded batches,
so that the database does not grow without bound under a steady load. Redis
holds no finished jobs, so it needs no sweeping.

Safe on several replicas at once: deleting an already deleted row deletes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from dispatcher.clock import Clock
from dispatcher.domain.errors import DispatchError
from dispatcher.domain.limits import DAY_MS
from dispatcher.store.sql import retention as sql
from dispatcher.store.sql.runs import RunStore

logger = logging.getLogger(__name__)


@dataclass
class RetentionStats:
    jobs: int = 0
    webhooks: int = 0
    calls: int = 0  # recorded EnqueueBatch calls (request_ids) past their window


class RetentionSweeper:
    def __init__(
        self,
        runs: RunStore,
        retention_ms: int,
        batch: int = 500,
        max_batches: int = 20,
        calls_window_ms: int = DAY_MS,
    ) -> None:
        self.runs = runs
        self.retention_ms = retention_ms
        self.batch = batch
        self.max_batches = max_batches  # per pass, so that one pass stays short
        self.calls_window_ms = calls_window_ms  # how long a request_id is remembered

    async def run_once(self, now_ms: int) -> RetentionStats:
        stats = RetentionStats()
        cutoff = now_ms - self.retention_ms
        calls_cutoff = now_ms - self.calls_window_ms
        for _ in range(self.max_batches):
            ids = await self.runs.finished_before(cutoff, self.batch)
            async with self.runs.transaction() as tx:
                stats.jobs += await sql.delete_jobs(tx, ids, cutoff)
                hooks = await sql.delete_settled_webhooks(tx, cutoff, self.batch)
                stats.webhooks += hooks
                calls = await sql.delete_calls_before(tx, calls_cutoff, self.batch)
                stats.calls += calls
            if len(ids) < self.batch and hooks < self.batch and calls < self.batch:
                break
        if stats.jobs or stats.webhooks or stats.calls:
            logger.info(
                "retention: deleted %d jobs, %d webhooks, %d recorded calls",
                stats.jobs, stats.webhooks, stats.calls,
            )  # fmt: skip
        return stats


async def run_forever(sweeper: RetentionSweeper, clock: Clock, interval_s: float = 60.0) -> None:
    while True:
        try:
            await sweeper.run_once(clock.now_ms())
        except DispatchError as exc:
            logger.warning("retention pass failed: %s", exc.reason)
        await asyncio.sleep(interval_s)
