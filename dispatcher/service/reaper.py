"""The reaper: expires lapsed leases and promotes scheduled jobs that are due.

Claim-safe on several replicas at once: candidates come from Redis, but each
transition is a compare-and-set on the SQL row (locked, state and version
checked), so two reapers never both expire one lease. Works in bounded
batches and loops until a short batch comes back. Every candidate it looks at
is left where SQL says it belongs, so it also repairs index drift.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass

from dispatcher import telemetry
from dispatcher.clock import Clock
from dispatcher.domain import transitions
from dispatcher.domain.errors import DispatchError
from dispatcher.domain.models import Job, JobChange, JobState
from dispatcher.service import dependencies
from dispatcher.service.dispatch import notices
from dispatcher.service.state import ServingState
from dispatcher.service.wakeups import Waiters
from dispatcher.store.redis.index import QueueRef, RedisIndex
from dispatcher.store.sql.runs import RunStore

logger = logging.getLogger(__name__)


@dataclass
class ReapStats:
    expired: int = 0
    dead_lettered: int = 0
    promoted: int = 0
    repaired: int = 0
    batches: int = 0
    deadline_expired: int = 0


class Reaper:
    def __init__(
        self,
        runs: RunStore,
        index: RedisIndex,
        waiters: Waiters,
        rng: random.Random | None = None,
        batch: int = 500,
    ) -> None:
        self.runs = runs
        self.index = index
        self.waiters = waiters
        self.rng = rng or random.Random()
        self.batch = batch
        self.totals = ReapStats()

    async def run_once(self, now_ms: int) -> ReapStats:
        """Handle everything overdue at `now_ms`, a batch at a time."""
        stats = ReapStats()
        await self._expire_unstarted(now_ms, stats)
        queues = await self.index.queues()
        while queues:
            due, expired = await self.index.overdue(queues, now_ms, self.batch)
            if not due and not expired:
                break
            await self._handle(due, expired, now_ms, stats)
            stats.batches += 1
            # Only queues that filled a whole batch can have more.
            full = {q for q, ids in (*due.items(), *expired.items()) if len(ids) >= self.batch}
            queues = sorted(full)
        for name in (
            "expired",
            "dead_lettered",
            "promoted",
            "repaired",
            "batches",
            "deadline_expired",
        ):
            setattr(self.totals, name, getattr(self.totals, name) + getattr(stats, name))
        return stats

    async def _handle(
        self,
        due: dict[QueueRef, list[str]],
        expired: dict[QueueRef, list[str]],
        now_ms: int,
        stats: ReapStats,
    ) -> None:
        candidates = {i for ids in (*due.values(), *expired.values()) for i in ids}
        changes: list[JobChange] = []
        async with self.runs.transaction() as tx:
            rows = await tx.lock(candidates)
            for job in rows.values():
                after = self._next(job, now_ms)
                if after is not None:
                    changes.append(JobChange(job, after, now_ms))
            changes += await dependencies.propagate(tx, changes, now_ms)
            await tx.save(changes)
        changed = {c.after.id: c.after for c in changes}
        untouched: list[Job] = [j for j in rows.values() if j.id not in changed]
        await self.index.place([*changed.values(), *untouched], notices(changes))
        for (ns, q), ids in (*due.items(), *expired.items()):
            missing = [i for i in ids if i not in rows]
            await self.index.forget(ns, q, missing)
            stats.repaired += len(missing)
        stats.repaired += len(untouched)
        for c in changes:
            if c.before.state is JobState.WAITING:
                continue  # a dependent moved along with its dependency
            if c.before.state is JobState.SCHEDULED:
                stats.promoted += 1
                continue
            stats.expired += 1
            logger.info(
                "lease expired; job %s",
                c.after.state.value,
                extra={
                    "job_id": c.after.id,
                    "queue": c.after.queue,
                    "namespace": c.after.namespace,
                    "worker_id": c.before.lease_holder,
                },
            )
            a = telemetry.attrs(c.after.namespace, c.after.queue)
            telemetry.leases_expired.add(1, a)
            if c.after.state is JobState.DEAD_LETTERED:
                stats.dead_lettered += 1
                telemetry.jobs_dead_lettered.add(1, a)
        for ref in {
            (c.after.namespace, c.after.queue) for c in changes if c.after.state is JobState.QUEUED
        }:
            self.waiters.notify(ref)

    async def _expire_unstarted(self, now_ms: int, stats: ReapStats) -> None:
        """Dead-letter jobs that nobody leased before their start deadline (SQL sweep:
        such a job may sit in a paused queue, or wait on dependencies, outside Redis)."""
        while ids := await self.runs.past_start_deadline(now_ms, self.batch):
            async with self.runs.transaction() as tx:
                rows = await tx.lock(ids)
                changes = [
                    JobChange(j, transitions.expire_unstarted(j, now_ms), now_ms)
                    for j in rows.values()
                    if transitions.past_start_deadline(j, now_ms)
                ]
                changes += await dependencies.propagate(tx, changes, now_ms)
                await tx.save(changes)
            await self.index.place([c.after for c in changes], notices(changes))
            stats.deadline_expired += len(changes)
            if len(ids) < self.batch or not changes:
                return

    def _next(self, job: Job, now_ms: int) -> Job | None:
        if job.state is JobState.LEASED and (job.lease_expires_ms or 0) <= now_ms:
            return transitions.expire(job, now_ms, self.rng)
        if job.state is JobState.SCHEDULED and job.run_at_ms <= now_ms:
            return transitions.promote(job, now_ms)
        return None


async def run_forever(reaper: Reaper, clock: Clock, state: ServingState, interval_s: float) -> None:
    """Run the reaper every `interval_s` (with jitter) while the replica serves."""
    while not state.draining.is_set():
        if state.serving:
            try:
                await reaper.run_once(clock.now_ms())
            except DispatchError as exc:
                logger.warning("reaper pass failed: %s", exc.reason)
        await asyncio.sleep(interval_s * random.uniform(0.8, 1.2))
