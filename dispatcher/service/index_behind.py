"""Index writes that follow Enqueue's commit, made after its answer.

An Enqueue is accepted once its insert commits: that is what makes it durable.
Indexing the new jobs in Redis only makes them leasable, so the call need not
wait for it. Waiting cost the producer a Redis round trip on every call (by
hand on PostgreSQL, two servers alternating, 3 rounds: single Enqueue calls
549-586/s, 1.65-1.76 ms p50, against 677-704/s, 1.38-1.42 ms, when the write
follows the answer). `IndexBehind`
makes the write after the answer; writes that gather while one is in flight
go out together in the next pipeline, and this replica's waiting Leases are
woken once their jobs are indexed.

Reading your writes: `caught_up()` returns once every write added before it
has landed (or failed). What reads or changes the index on behalf of a caller
(Lease, Cancel, queue statistics and depth limits, admin listings and
purges) awaits it first, so nothing served by this replica finds a queue
empty that an answered Enqueue has filled. Another replica learns of the jobs
from the wake-up the write publishes, as before; a Lease there that does not
wait (`wait` 0) in the moment between the answer and the write may find
nothing.

A write that fails (Redis unavailable) asks for a repair, as a failed write
awaited in the call did: the jobs are committed, and the reconciler puts
them back. A crash between the answer and the write leaves the same repair.
At most `max_pending` jobs wait for their write: past that, Enqueue waits for
the index again, so a stalled Redis slows producers instead of filling memory.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

from dispatcher.domain.errors import Unavailable
from dispatcher.domain.models import Job, JobState
from dispatcher.service.gather import Gatherer
from dispatcher.service.state import ServingState
from dispatcher.service.wakeups import Waiters
from dispatcher.store.redis.index import Notice, RedisIndex

logger = logging.getLogger(__name__)

MAX_PENDING_JOBS = 10_000


class IndexBehind:
    """Indexes committed jobs in the background, in gathered batches (`Gatherer`)."""

    def __init__(
        self,
        index: RedisIndex,
        waiters: Waiters,
        state: ServingState,
        max_pending: int = MAX_PENDING_JOBS,
    ) -> None:
        self._index = index
        self._waiters = waiters
        self._state = state
        self.max_pending = max_pending
        self._gathered: Gatherer[tuple[Sequence[Job], Sequence[Notice]]] = Gatherer(self._write)
        self._waiting_jobs = 0  # added, not yet taken by a write: the backlog

    async def add(self, jobs: Sequence[Job], notices: Sequence[Notice]) -> None:
        """Index and announce `jobs` (committed, QUEUED or SCHEDULED), and
        publish `notices` (of other jobs), soon.

        Returns at once, unless too many jobs already wait for their write."""
        if not jobs and not notices:
            return
        self._waiting_jobs += len(jobs)
        self._gathered.add([(jobs, notices)])
        if self._waiting_jobs > self.max_pending:
            await self.caught_up()

    async def caught_up(self) -> None:
        """Return once everything added so far is written (or given up)."""
        await self._gathered.caught_up()

    async def _write(self, batch: list[tuple[Sequence[Job], Sequence[Notice]]]) -> None:
        jobs = [j for added, _ in batch for j in added]
        notices = [n for _, added in batch for n in added]
        self._waiting_jobs -= len(jobs)
        try:
            await self._index.enqueue(jobs, notices)
        except Unavailable:
            logger.warning("index update failed after commit; the reconciler will repair it")
            self._state.request_repair()
        except Exception:  # no caller is left to tell: log it, and let the reconciler repair
            logger.exception("index update failed after commit")
            self._state.request_repair()
        # Wake this replica's Leases even after a failure: one that finds nothing waits again.
        ready = Counter((j.namespace, j.queue) for j in jobs if j.state is JobState.QUEUED)
        for queue, n in ready.items():
            self._waiters.notify(queue, n)
