"""Rebuilding the Redis index from SQL, and repairing drift between the two.

Rebuild: at startup, and whenever the `index:built` marker is missing (Redis
was wiped or restarted empty), one replica takes the rebuild lock and pages
through every non-terminal row, placing each job where its state says. While
the index is incomplete this replica reports NOT_SERVING and Lease answers
UNAVAILABLE, so no worker concludes from an empty answer that a queue is empty.

Reconcile: every pass also checks one page of live rows against Redis (a
cursor walks the whole table over successive passes, starting with the jobs
of the last minute) and puts back any job that is missing or misplaced, so a
Redis write lost after a commit is repaired without a restart.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from dispatcher import telemetry
from dispatcher.clock import Clock
from dispatcher.domain import ids
from dispatcher.domain.errors import DispatchError
from dispatcher.domain.models import JobState, Placeable
from dispatcher.service.state import Phase, ServingState
from dispatcher.service.wakeups import Waiters
from dispatcher.store.redis.index import RedisIndex, placement
from dispatcher.store.sql.runs import RunStore

logger = logging.getLogger(__name__)

REBUILD_LOCK_MS = 60_000
RECENT_FIRST_MS = 60_000


@dataclass
class ReconcileStats:
    rebuilt: int = 0
    checked: int = 0
    repaired: int = 0


class Reconciler:
    def __init__(
        self,
        runs: RunStore,
        index: RedisIndex,
        clock: Clock,
        state: ServingState,
        waiters: Waiters,
        page: int = 1000,
        also_rebuild: Sequence[Callable[[], Awaitable[None]]] = (),
    ) -> None:
        self.runs = runs
        self.index = index
        self.clock = clock
        self.state = state
        self.waiters = waiters
        self.page = page
        # Other state mirrored from SQL into Redis (paused flags), restored with the index.
        self.also_rebuild = list(also_rebuild)
        self.owner = uuid.uuid4().hex
        # A replica starts its walk at the jobs of the last minute (ids sort by
        # creation time): an index write lost when a replica died, after its
        # Enqueue answered, is most likely among them (`IndexBehind`).
        self._cursor = ids.first_id_at(clock.now_ms() - RECENT_FIRST_MS)
        self.totals = ReconcileStats()

    async def ensure_index(self) -> int:
        """Rebuild the index from SQL unless it is known to be complete. Returns jobs placed."""
        if await self.index.is_built():
            if self.state.phase is Phase.REBUILDING or self.state.phase is Phase.STARTING:
                self.state.phase = Phase.SERVING
            return 0
        if self.state.phase is not Phase.DRAINING:
            self.state.phase = Phase.REBUILDING
        placed = 0
        while not await self.index.try_lock_rebuild(self.owner, REBUILD_LOCK_MS):
            await asyncio.sleep(0.2)  # another replica is rebuilding; wait for its marker
            if await self.index.is_built():
                break
        else:
            try:
                placed = await self._rebuild()
                for restore in self.also_rebuild:
                    await restore()
                await self.index.mark_built(self.clock.now_ms())
            finally:
                await self.index.unlock_rebuild()
        if self.state.phase is Phase.REBUILDING:
            self.state.phase = Phase.SERVING
        self.waiters.notify_all()
        self.totals.rebuilt += placed
        logger.info("index rebuilt from SQL: %d live jobs placed", placed)
        return placed

    async def _rebuild(self) -> int:
        after, placed = "", 0
        while True:
            entries = await self.runs.live_entries(after, self.page)
            if not entries:
                return placed
            await self.index.try_lock_rebuild(self.owner, REBUILD_LOCK_MS)
            await self.index.place(entries)
            placed += len(entries)
            after = entries[-1].id

    async def check_page(self) -> ReconcileStats:
        """Compare one page of live rows with Redis and repair what differs."""
        stats = ReconcileStats()
        entries = await self.runs.live_entries(self._cursor, self.page)
        self._cursor = entries[-1].id if len(entries) == self.page else ""
        if not entries:
            return stats
        stats.checked = len(entries)
        found = await self.index.membership(entries)
        suspects = [
            e
            for e, (where, score) in zip(entries, found, strict=True)
            if not _agrees(e, where, score)
        ]
        if suspects:
            # Read again: a row that changed meanwhile was handled by its own writer.
            fresh = await self.runs.get_many([j.id for j in suspects])
            stable = [
                fresh[j.id] for j in suspects if j.id in fresh and fresh[j.id].version == j.version
            ]
            await self.index.place(stable)
            stats.repaired = len(stable)
            telemetry.reconciler_repairs.add(len(stable))
            if stable:
                logger.warning("reconciler repaired %d index entries", len(stable))
        self.totals.checked += stats.checked
        self.totals.repaired += stats.repaired
        return stats

    async def run_once(self) -> ReconcileStats:
        await self.ensure_index()
        return await self.check_page()


def _agrees(job: Placeable, where: str, score: int | None) -> bool:
    want, want_score = placement(job)
    if job.state is JobState.QUEUED and where == "l":
        # A lease in progress: lease.lua moved it before the lease's SQL commit.
        # Putting it back in ready would leave a stale entry that a later Lease
        # picks for nothing; if that commit never comes, the provisional lease
        # expires and the reaper puts the job back.
        return True
    if want != where:
        return False
    # A leased entry's score may lag a heartbeat by a moment; only its place matters.
    return want == "l" or score == want_score


async def run_forever(reconciler: Reconciler, state: ServingState, interval_s: float) -> None:
    """Reconcile every `interval_s`, or at once when a write asks for a repair."""
    while not state.draining.is_set():
        try:
            await reconciler.run_once()
            state.store_healthy = True
        except DispatchError as exc:
            state.store_healthy = False
            logger.warning("reconcile pass failed: %s", exc.reason)
        state.repair_requested.clear()
        try:
            async with asyncio.timeout(interval_s):  # not wait_for: see updates.wait_for_change
                await state.repair_requested.wait()
        except TimeoutError:
            pass
