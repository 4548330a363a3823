"""Handing a job that Enqueue commits straight to a Lease waiting on this replica.

Otherwise a new job for an idle worker takes two more round trips once its
insert commits: the waiting Lease wakes, picks the job in Redis (`lease.lua`)
and leases it in SQL, and only then answers. Handed off, the job's row is
inserted already LEASED (version 2, its transition in run_events; its QUEUED
version 1, at the same moment, is implied by the row as for any job born
QUEUED), its lease is recorded in Redis (`hand_off.lua`) while the insert
runs, and the waiter answers as soon as both are done: the two round trips
overlap instead of following one another.

Only plain jobs are handed: ready now (QUEUED), without a concurrency key, in
a namespace without a lease quota, to a waiter idle on this replica, in a queue
that this replica's copy of the queue settings shows neither paused nor
limited. `hand_off.lua` checks the same in Redis, where a pause or a limit set
through another replica shows at once: a job it refuses was committed LEASED
all the same, so it is given back (QUEUED again, its attempt not counted) and
its waiter waits on; the general path then applies the queue's rules. A job
whose insert does not happen (a taken idempotency key, a failure) is withdrawn
and its waiter released. A waiter gone by the time the insert commits gets
nothing: its job is given back at once, as for a Lease whose caller went away.

The order is safe because SQL is the truth: a replica that dies between the
commit and the Redis write leaves a LEASED row that the reconciler indexes by
its state and the reaper expires when its lease runs out.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dispatcher.domain import ids, transitions
from dispatcher.domain.errors import Unavailable
from dispatcher.domain.models import GrantedLease, Job, JobState, QueueSettings, evolve
from dispatcher.service.queues import QueueControl
from dispatcher.service.quotas import Quotas
from dispatcher.service.wakeups import Waiter, Waiters
from dispatcher.store.redis.index import RedisIndex

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Offer:
    """A new job and the lease it is to carry to a claimed waiter."""

    queued: Job  # the job as enqueued
    leased: Job  # the same job leased to the waiter: what is inserted
    waiter: Waiter

    @property
    def lease(self) -> GrantedLease:
        assert self.leased.lease_token is not None and self.leased.lease_expires_ms is not None
        return GrantedLease(self.leased, self.leased.lease_token, self.leased.lease_expires_ms)


@dataclass
class HandOffs:
    waiters: Waiters
    index: RedisIndex
    quotas: Quotas | None = None
    queues: QueueControl | None = None  # this replica's copy of the queue settings

    def _eligible(self, job: Job) -> bool:
        if job.state is not JobState.QUEUED or job.concurrency_key:
            return False
        if self.quotas is not None and self.quotas.quota(job.namespace).max_leases:
            return False
        return self.queues is None or _plain(self.queues.settings(job.namespace, job.queue))

    def claim(self, jobs: Sequence[Job], now_ms: int) -> dict[str, Offer]:
        """Claim an idle waiter for each eligible job; the offers made, by job id
        (the jobs to insert leased). Nothing is recorded yet: see `record`."""
        offers: dict[str, Offer] = {}
        for job in jobs:
            # Cheapest first: most enqueues find no Lease waiting on their queue.
            if not self.waiters.waiting_on((job.namespace, job.queue)) or not self._eligible(job):
                continue
            waiter = self.waiters.claim((job.namespace, job.queue))
            if waiter is None:
                continue
            asker = waiter.asker
            assert asker is not None  # `claim` takes only waiters that take handed jobs
            token = ids.new_lease_token(job.id)
            duration = asker.duration_ms or job.lease_duration_ms
            leased = transitions.lease(job, token, asker.worker_id, now_ms, duration)
            offers[job.id] = Offer(job, evolve(leased, lease_principal=asker.principal_id), waiter)
        return offers

    async def record(self, offers: Iterable[Offer]) -> set[str]:
        """Record the offers' leases in Redis, unless their queue is paused or
        limited there; the ids of the jobs recorded (none if Redis is unavailable:
        the general path then reports Redis's state)."""
        try:
            return await self.index.hand_off([o.leased for o in offers])
        except Unavailable:
            return set()

    async def withdraw(self, offers: Iterable[Offer]) -> None:
        """These jobs were not inserted leased: release their waiters, forget their leases."""
        by_queue: dict[tuple[str, str], list[str]] = {}
        for o in offers:
            o.waiter.release()
            by_queue.setdefault((o.queued.namespace, o.queued.queue), []).append(o.queued.id)
        for (ns, queue), job_ids in by_queue.items():
            try:
                await self.index.forget(ns, queue, job_ids)
            except Unavailable:  # the reaper drops an expired lease whose row is not leased
                logger.warning("could not withdraw %d handed-off leases from Redis", len(job_ids))


def _plain(settings: QueueSettings) -> bool:
    """Neither paused nor limited at lease time: what `hand_off.lua` also checks."""
    return not (
        settings.paused
        or settings.max_concurrency
        or settings.rate_per_s
        or settings.key_max_concurrency
        or settings.key_rate_per_s
    )
