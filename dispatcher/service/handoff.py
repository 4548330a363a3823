"""Handing a job that Enqueue commits straight to a Lease waiting on this replica.

Otherwise a new job for an idle worker takes two more round trips once its
insert commits: the waiting Lease wakes, picks the job in Redis (`lease.lua`)
and leases it in SQL, and only then answers. Handed off, the job's lease is
recorded in Redis before the insert (as `lease.lua` records a pick before SQL
confirms it), its row is inserted already LEASED (version 2, with both
transitions in run_events), and the waiter answers as soon as the insert
commits.

Only plain jobs are handed: ready now (QUEUED), without a concurrency key, in
a namespace without a lease quota, to a waiter idle on this replica; and
`hand_off.lua` refuses a paused or limited queue. Those take the general path,
which applies their rules. A job whose insert does not happen (a taken
idempotency key, a failure) is withdrawn and its waiter released. A waiter
gone by the time the insert commits gets nothing: its job is given back at
once, as for a Lease whose caller went away.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dispatcher.domain import ids, transitions
from dispatcher.domain.errors import Unavailable
from dispatcher.domain.models import GrantedLease, Job, JobState, evolve
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

    def _eligible(self, job: Job) -> bool:
        if job.state is not JobState.QUEUED or job.concurrency_key:
            return False
        return self.quotas is None or not self.quotas.quota(job.namespace).max_leases

    async def offer(self, jobs: Sequence[Job], now_ms: int) -> dict[str, Offer]:
        """Claim an idle waiter for each eligible job and record its lease in Redis;
        the offers made, by job id (the jobs to insert leased)."""
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
        if not offers:
            return offers
        try:
            recorded = await self.index.hand_off([o.leased for o in offers.values()])
        except Unavailable:
            recorded = set()  # the general path reports Redis's state
        refused = [o for job_id, o in offers.items() if job_id not in recorded]
        for o in refused:
            del offers[o.queued.id]
            o.waiter.release()
        return offers

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
