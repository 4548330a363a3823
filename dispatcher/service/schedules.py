"""Recurring schedules: create, read, pause, resume and delete them, and fire their ticks.

Firing is safe on several replicas at once, and a crash anywhere loses no tick
and duplicates none. For each due tick, in this order:

1. claim: a compare-and-set UPDATE sets the row's claimed_until, re-checking
   that next_fire_at is still due and nobody holds a live claim. Only the
   replica whose UPDATE matched goes on.
2. enqueue the tick's job through `Dispatcher.enqueue`, with the idempotency
   key schedule:<id>:<tick>.
3. advance: a compare-and-set UPDATE moves next_fire_at from this tick to the
   next, only if it is still this tick.

Enqueue comes before advance so that a crash can never lose a tick: if a
replica dies after 1 or 2, the claim lapses (CLAIM_MS) and another replica
fires the same tick again, and the idempotency key turns a repeated enqueue
into a lookup of the job already made. Advancing first would lose the tick on
a crash between the two steps. The claim keeps replicas from racing to
enqueue in the normal case; the key makes the race harmless when a claim
lapses under a slow replica. Schedules live in SQL only.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, replace

from dispatcher import telemetry
from dispatcher.clock import Clock
from dispatcher.domain import ids, validation
from dispatcher.domain import schedules as sch
from dispatcher.domain.errors import (
    DispatchError,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from dispatcher.domain.models import Page
from dispatcher.domain.schedules import Created, Schedule, ScheduleSpec
from dispatcher.service.admin import _page_size, decode_token, encode_token
from dispatcher.service.dispatch import Dispatcher
from dispatcher.service.state import ServingState
from dispatcher.store.sql.admin import audit
from dispatcher.store.sql.runs import DuplicateKey, RunStore
from dispatcher.store.sql.schedules import ScheduleStore

logger = logging.getLogger(__name__)

CLAIM_MS = 30_000  # below MISFIRE_GRACE_MS: a tick retried after a lapsed claim is still on time
INTERVAL_S = 1.0
RETRY_MS = 1_000  # a tick refused for a retryable reason is tried again after this (or RetryInfo)


def _not_found(schedule_id: str) -> sch.ScheduleNotFound:
    return sch.ScheduleNotFound("no schedule with this id", {"schedule_id": schedule_id})


class Schedules:
    """Schedule management. No gRPC here: requests and answers are domain values."""

    def __init__(self, runs: RunStore, dispatcher: Dispatcher, clock: Clock) -> None:
        self.runs = runs
        self.store = ScheduleStore(runs)
        self.dispatcher = dispatcher
        self.clock = clock
        self.id_gen = ids.JobIdGenerator()

    async def create(self, namespace: str, spec: ScheduleSpec) -> Created:
        """Create a schedule, or return the identical one that already has its name."""
        ns = validation.namespace(namespace)
        spec = sch.normalize(spec, self.dispatcher.limits)
        guard = self.dispatcher.url_guard
        if spec.template.callback_url and guard is not None:
            await guard(spec.template.callback_url, "schedule.job_template.callback_url")
        existing = await self.store.by_name(ns, spec.name)
        if existing is not None:
            return _existing(existing, spec)
        if await self.store.count(ns) >= sch.MAX_PER_NAMESPACE:
            raise sch.ScheduleLimit(
                f"a namespace holds at most {sch.MAX_PER_NAMESPACE} schedules", {"namespace": ns}
            )
        now = self.clock.now_ms()
        x = Schedule(
            id=self.id_gen.new(now),
            namespace=ns,
            spec=spec,
            created_ms=now,
            next_fire_ms=sch.next_after(spec, now, now),
        )
        try:
            async with self.runs.transaction() as tx:
                await self.store.insert(tx, x)
                await audit(tx, now, "create_schedule", ns, x.id, {"name": spec.name})
        except DuplicateKey:  # created concurrently, on this replica or another
            existing = await self.store.by_name(ns, spec.name)
            if existing is None:
                raise Unavailable("a concurrent create of this schedule failed; retry") from None
            return _existing(existing, spec)
        return Created(x, created=True)

    async def get(self, namespace: str, schedule_id: str) -> Schedule:
        ns = validation.namespace(namespace)
        sch.check_id(schedule_id)
        x = await self.store.get(ns, schedule_id)
        if x is None:
            raise _not_found(schedule_id)
        return x

    async def list_page(self, namespace: str, page_size: int, page_token: str) -> Page:
        ns = validation.namespace(namespace)
        size = _page_size(page_size, 1000)
        after = decode_token(page_token)
        if page_token and not validation.NAME_RE.fullmatch(after):
            raise InvalidArgument.field("page_token", "is not a token from a previous page")
        rows = await self.store.page(ns, after, size + 1)
        page = rows[:size]
        return Page(page, encode_token(page[-1].spec.name) if len(rows) > size else "")

    async def pause(self, namespace: str, schedule_id: str) -> Schedule:
        return await self._set_paused(namespace, schedule_id, paused=True)

    async def resume(self, namespace: str, schedule_id: str) -> Schedule:
        """Resume from the first tick after now: ticks that passed while paused never fire."""
        return await self._set_paused(namespace, schedule_id, paused=False)

    async def _set_paused(self, namespace: str, schedule_id: str, paused: bool) -> Schedule:
        ns = validation.namespace(namespace)
        sch.check_id(schedule_id)
        now = self.clock.now_ms()
        async with self.runs.transaction() as tx:
            x = await self.store.lock(tx, ns, schedule_id)
            if x is None:
                raise _not_found(schedule_id)
            if x.paused is paused:
                return x
            next_ms = x.next_fire_ms if paused else sch.next_after(x.spec, x.created_ms, now)
            x = replace(x, paused=paused, next_fire_ms=next_ms)
            await self.store.set_state(tx, x)
            action = "pause_schedule" if paused else "resume_schedule"
            await audit(tx, now, action, ns, x.id, {"name": x.spec.name})
        return x

    async def delete(self, namespace: str, schedule_id: str) -> None:
        ns = validation.namespace(namespace)
        sch.check_id(schedule_id)
        now = self.clock.now_ms()
        async with self.runs.transaction() as tx:
            if not await self.store.delete(tx, ns, schedule_id):
                raise _not_found(schedule_id)
            await audit(tx, now, "delete_schedule", ns, schedule_id, {})


def _existing(existing: Schedule, spec: ScheduleSpec) -> Created:
    if not existing.same_definition(spec):
        raise sch.ScheduleExists(
            "a different schedule has this name",
            {"schedule_id": existing.id, "name": spec.name},
        )
    return Created(existing, created=False)


# ---- firing ------------------------------------------------------------------


@dataclass
class FireStats:
    fired: int = 0  # jobs enqueued (or found already enqueued for the tick)
    skipped: int = 0  # misfired schedules that fired nothing (SKIP)
    retried: int = 0  # ticks given back after a retryable failure
    failed: int = 0  # ticks given up after a failure that retrying would not fix
    errors: int = 0  # schedules left to a later pass (their claim lapses): store down, a bug


class ScheduleFirer:
    """Fires due ticks. Claim-safe on several replicas at once (see the module docstring)."""

    def __init__(
        self,
        store: ScheduleStore,
        dispatcher: Dispatcher,
        batch: int = 100,
        max_batches: int = 100,
        claim_ms: int = CLAIM_MS,
    ) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.batch = batch
        self.max_batches = max_batches  # per pass, so that one pass stays short
        self.claim_ms = claim_ms

    async def run_once(self, now_ms: int) -> FireStats:
        """Fire every tick due at `now_ms`, a batch at a time. A schedule behind by
        several ticks (within the misfire grace) fires them one after the other."""
        stats = FireStats()
        for _ in range(self.max_batches):
            claimed = await self.store.claim_due(now_ms, now_ms + self.claim_ms, self.batch)
            if not claimed:
                break
            for x in claimed:
                try:
                    await self.fire(x, now_ms, stats)
                except DispatchError as exc:  # its claim lapses and a later pass retries
                    logger.warning("schedule %s could not fire: %s", x.id, exc.reason)
                    stats.errors += 1
                except Exception:
                    # One schedule's surprise must not hold back the others of its batch.
                    logger.exception("schedule %s could not fire", x.id)
                    stats.errors += 1
        return stats

    async def fire(self, x: Schedule, now_ms: int, stats: FireStats) -> None:
        """Fire one claimed schedule's due tick: enqueue, then advance."""
        tick = x.next_fire_ms
        plan = sch.plan(x, now_ms)
        if plan.misfired:
            logger.info(
                "schedule %s missed ticks from %s (policy %s)",
                x.id,
                sch.rfc3339(tick),
                x.spec.misfire_policy.value,
            )
        if plan.fire_ms is None:
            await self.store.advance(x.id, tick, plan.next_ms, None, x.last_error)
            stats.skipped += 1
            return
        job = sch.job_for_tick(x.id, x.spec.template, plan.fire_ms)
        try:
            # The job carries this span's trace context: its run links back to the tick.
            with telemetry.span("schedule.fire", schedule_id=x.id, namespace=x.namespace):
                out = await self.dispatcher.enqueue(x.namespace, job)
        except (Unavailable, ResourceExhausted) as exc:
            hint = exc.retry_after_ms if isinstance(exc, ResourceExhausted) else 0
            delay = hint or RETRY_MS
            error = f"{exc.reason}: {exc.message}"
            await self.store.retry_at(x.id, tick, now_ms + min(delay, self.claim_ms), error)
            stats.retried += 1
            return
        except DispatchError as exc:
            logger.warning("schedule %s gave up its tick %s: %s", x.id, sch.rfc3339(tick), exc)
            await self.store.advance(x.id, tick, plan.next_ms, None, f"{exc.reason}: {exc.message}")
            stats.failed += 1
            return
        await self.store.advance(x.id, tick, plan.next_ms, (plan.fire_ms, out.job.id))
        stats.fired += 1


async def run_forever(
    firer: ScheduleFirer, clock: Clock, state: ServingState, interval_s: float = INTERVAL_S
) -> None:
    """Fire due ticks every `interval_s` (with jitter) while the replica serves."""
    while not state.draining.is_set():
        if state.serving:
            try:
                await firer.run_once(clock.now_ms())
            except DispatchError as exc:
                logger.warning("schedule pass failed: %s", exc.reason)
        await asyncio.sleep(interval_s * random.uniform(0.8, 1.2))
