"""Operator operations: queue statistics, job listings, dead-letter retry, purge, workers.

Changes follow the same order as the dispatch path (SQL commit, then Redis)
and each is recorded in the admin_audit table in the same transaction.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass

from dispatcher.clock import Clock
from dispatcher.domain import transitions, validation
from dispatcher.domain.errors import InvalidArgument, JobNotFound
from dispatcher.domain.models import (
    Job,
    JobChange,
    JobState,
    Page,
    Priority,
    PriorityStats,
    QueueStats,
    WorkerInfo,
)
from dispatcher.service.dispatch import notices
from dispatcher.service.index_behind import IndexBehind
from dispatcher.service.queues import QueueControl
from dispatcher.service.wakeups import Waiters
from dispatcher.store.redis.index import RedisIndex
from dispatcher.store.sql.admin import AdminQueries, audit, delete_in_states, lock_dead
from dispatcher.store.sql.runs import RunStore

BATCH = 500
DEFAULT_PAGE = 100
MINUTE_MS = 60_000


def _page_size(n: int, limit: int) -> int:
    if n == 0:
        return DEFAULT_PAGE
    if not 1 <= n <= limit:
        raise InvalidArgument.field("page_size", f"must be between 1 and {limit}")
    return n


def encode_token(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode()


def decode_token(token: str) -> str:
    if not token:
        return ""
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument.field("page_token", "is not a token from a previous page") from None


@dataclass
class Admin:
    runs: RunStore
    index: RedisIndex
    clock: Clock
    waiters: Waiters
    queues: QueueControl
    # Index writes still to land after answered Enqueues: listings and purges wait for them.
    behind: IndexBehind | None = None

    def __post_init__(self) -> None:
        self.queries = AdminQueries(self.runs)

    async def list_queues(self, namespace: str, page_size: int, page_token: str) -> Page:
        ns = validation.namespace(namespace)
        size = _page_size(page_size, 1000)
        after = decode_token(page_token)
        await self._caught_up()
        names = sorted(q for n, q in await self.index.queues() if n == ns and q > after)
        page, more = names[:size], len(names) > size
        stats = [await self.queue_stats(ns, q) for q in page]
        return Page(stats, encode_token(page[-1]) if more else "")

    async def queue_stats(self, ns: str, queue: str) -> QueueStats:
        now = self.clock.now_ms()
        counts = await self.queries.counts(ns, queue)
        oldest = await self.queries.oldest_queued(ns, queue)
        recent = await self.queries.finished_since(ns, queue, now - MINUTE_MS)
        levels = []
        for p in Priority:
            levels.append(
                PriorityStats(
                    priority=p,
                    queued=counts.get((JobState.QUEUED.value, p.value), 0),
                    scheduled=counts.get((JobState.SCHEDULED.value, p.value), 0),
                    leased=counts.get((JobState.LEASED.value, p.value), 0),
                    dead_lettered=counts.get((JobState.DEAD_LETTERED.value, p.value), 0),
                    oldest_queued_age_ms=max(0, now - oldest[p.value]) if p.value in oldest else 0,
                )
            )
        settings = self.queues.settings(ns, queue)
        return QueueStats(
            ns,
            queue,
            levels,
            succeeded_last_minute=recent.get(JobState.SUCCEEDED.value, 0),
            dead_lettered_last_minute=recent.get(JobState.DEAD_LETTERED.value, 0),
            paused=settings.paused,
            max_depth=settings.max_depth,
            settings=settings,
        )

    async def list_jobs(
        self, namespace: str, queue: str, state: JobState | None, page_size: int, page_token: str
    ) -> Page:
        ns = validation.namespace(namespace)
        validation.check_name(queue, "queue")
        size = _page_size(page_size, 1000)
        before = decode_token(page_token)
        if before:
            validation.check_job_id(before, "page_token")
        jobs = await self.queries.list_jobs(ns, queue, state, before, size + 1)
        page = jobs[:size]
        return Page(page, encode_token(page[-1].id) if len(jobs) > size else "")

    async def retry_dead_lettered(self, namespace: str, job_id: str, queue: str) -> int:
        ns = validation.namespace(namespace)
        if bool(job_id) == bool(queue):
            raise InvalidArgument.field("job_id", "name exactly one of job_id and queue")
        if job_id:
            validation.check_job_id(job_id)
            return await self._retry_one(ns, job_id)
        validation.check_name(queue, "queue")
        total = 0
        while True:
            now = self.clock.now_ms()
            async with self.runs.transaction() as tx:
                dead = await lock_dead(tx, ns, queue, BATCH)
                changes = [JobChange(j, transitions.retry_dead(j, now), now) for j in dead]
                await tx.save(changes)
                if changes:
                    await audit(tx, now, "retry_dead_lettered", ns, queue, {"jobs": len(changes)})
            await self._placed(changes)
            total += len(changes)
            if len(dead) < BATCH:
                return total

    async def _retry_one(self, ns: str, job_id: str) -> int:
        now = self.clock.now_ms()
        async with self.runs.transaction() as tx:
            job = (await tx.lock([job_id])).get(job_id)
            if job is None or job.namespace != ns:
                raise JobNotFound("no job with this id", {"job_id": job_id})
            change = JobChange(job, transitions.retry_dead(job, now), now)
            await tx.save([change])
            await audit(tx, now, "retry_dead_lettered", ns, job_id, {"queue": job.queue})
        await self._placed([change])
        return 1

    async def _caught_up(self) -> None:
        if self.behind is not None:
            await self.behind.caught_up()

    async def _placed(self, changes: Sequence[JobChange]) -> None:
        await self.index.place([c.after for c in changes], notices(changes))
        for ref in {(c.after.namespace, c.after.queue) for c in changes}:
            self.waiters.notify(ref)

    async def purge_queue(self, namespace: str, queue: str, states: Sequence[JobState]) -> int:
        ns = validation.namespace(namespace)
        validation.check_name(queue, "queue")
        wanted = list(states) or [JobState.QUEUED, JobState.SCHEDULED]
        if JobState.LEASED in wanted:
            raise InvalidArgument.field(
                "states", "leased jobs cannot be purged; wait or let them expire"
            )
        total = 0
        while True:
            now = self.clock.now_ms()
            async with self.runs.transaction() as tx:
                ids = await delete_in_states(tx, ns, queue, wanted, BATCH)
                if ids:
                    detail = {"jobs": len(ids), "states": [s.value for s in wanted]}
                    await audit(tx, now, "purge_queue", ns, queue, detail)
            await self._caught_up()  # an answered Enqueue's write lands before the purge's
            await self.index.forget(ns, queue, ids)
            total += len(ids)
            if len(ids) < BATCH:
                return total

    async def list_workers(self, namespace: str) -> list[WorkerInfo]:
        ns = validation.namespace(namespace)
        seen = await self.index.workers(ns)
        held = await self.queries.leases_by_holder(ns)
        ids = sorted(set(seen) | set(held))
        return [WorkerInfo(w, seen.get(w, 0), held.get(w, 0)) for w in ids]


__all__ = ["Admin", "Job"]
