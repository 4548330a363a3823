"""StreamUpdates: the current state of followed jobs, then every later transition.

No gap, no duplicate: a subscriber registers for notices *before* reading the
snapshot, then for each job reads from the run_events table every version
after the last one it sent (a QUEUED version 1 is read from the job's own row,
which implies it: `RunStore.events_after`). A notice (from Redis pub/sub,
published after each commit) only says "look again"; the events come from SQL. Followed job ids
are also re-read every second, so a lost notice delays an update but never
loses it.

A replica takes the updates channel only while something here follows (see
`listener`): every replica would otherwise read and parse every notice of the
whole deployment for nobody. The first follower waits until Redis confirms the
subscription before it reads its snapshot, so that no notice published after
the snapshot is missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from dispatcher.domain import validation
from dispatcher.domain.errors import InvalidArgument, JobNotFound
from dispatcher.domain.limits import Limits
from dispatcher.domain.models import Job, JobUpdate, StreamRequest, Transition
from dispatcher.store.sql.runs import RunStore

POLL_S = 1.0
# How long the first follower waits for the updates subscription before it reads
# its snapshot anyway (Redis slow or failing: the poll backstop covers the gap).
SUBSCRIBE_WAIT_S = 1.0


@dataclass(eq=False)
class Subscription:
    namespace: str
    job_ids: frozenset[str]
    queue: str
    pending: set[str] = field(default_factory=set)
    woken: asyncio.Event = field(default_factory=asyncio.Event)

    def wants(self, job_id: str, namespace: str, queue: str) -> bool:
        if namespace != self.namespace:
            return False
        return job_id in self.job_ids if self.job_ids else queue == self.queue


class UpdateHub:
    """Routes update notices to the subscriptions that want them, and tells the
    listener whether this replica needs the updates channel at all."""

    def __init__(self) -> None:
        self._subs: set[Subscription] = set()
        self._changed = asyncio.Event()  # followed went from False to True or back
        self._live = asyncio.Event()  # Redis confirmed the updates subscription
        self._listening = False  # a listener is connected and manages the subscription
        # Changes of the subscription asked for and not yet confirmed. Redis
        # confirms them in order, so the last one asked for holds once none is
        # pending. (A connection the client re-made by itself confirms its
        # channels again, unasked: hence a floor at zero.)
        self._pending = 0
        self._wants_channel = False

    @property
    def followed(self) -> bool:
        return bool(self._subs)

    async def subscribe(self, sub: Subscription, within_s: float = SUBSCRIBE_WAIT_S) -> None:
        """Register `sub`; return once notices reach it, or after `within_s`."""
        self._subs.add(sub)
        if len(self._subs) == 1:
            self._changed.set()
        if self._listening and not self._live.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(within_s):
                    await self._live.wait()

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.discard(sub)
            if not self._subs:
                self._changed.set()

    async def wait_for_change(self, timeout_s: float | None = None) -> None:
        """Return when `followed` may have changed, or after `timeout_s`."""
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
        # cancel that arrives as it finishes (python/cpython#86296, fixed in 3.12),
        # and a listener waiting here would then never stop (tests/unit/test_update_hub.py).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._changed.wait()
        self._changed.clear()

    def attach(self) -> None:
        """A listener is connected: followers wait for its subscription."""
        self._listening = True

    def detach(self) -> None:
        """The listener lost its connection: no subscription until it is back."""
        self._listening = False
        self._live.clear()
        self._pending = 0
        self._wants_channel = False

    def asking(self, subscribe: bool) -> None:
        """The listener is about to take (True) or drop the updates channel."""
        self._pending += 1
        self._wants_channel = subscribe
        self._live.clear()

    def confirmed(self, subscribed: bool) -> None:
        """Redis confirmed that the updates channel was taken (True) or dropped."""
        self._pending = max(0, self._pending - 1)
        if self._pending == 0 and subscribed and self._wants_channel:
            self._live.set()

    def on_message(self, message: str) -> None:
        """Handle one message of the updates channel: [[job id, ns, queue, version], ...]."""
        if not self._subs:
            return
        for job_id, ns, queue, _version in json.loads(message):
            for sub in self._subs:
                if sub.wants(job_id, ns, queue):
                    sub.pending.add(job_id)
                    sub.woken.set()


def _from_job(job: Job) -> JobUpdate:
    return JobUpdate(
        job.id,
        job.queue,
        job.version,
        job.state,
        job.attempt,
        job.finished_ms or job.started_ms or job.created_ms,
        job.last_error,
        job,
    )


def _from_event(e: Transition, queue: str, job: Job | None) -> JobUpdate:
    return JobUpdate(e.job_id, queue, e.version, e.state, e.attempt, e.at_ms, e.error, job)


class UpdateStreams:
    def __init__(self, runs: RunStore, hub: UpdateHub, limits: Limits) -> None:
        self.runs = runs
        self.hub = hub
        self.limits = limits

    def _check(self, req: StreamRequest) -> Subscription:
        ns = validation.namespace(req.namespace)
        if req.job_ids:
            if len(req.job_ids) > self.limits.max_stream_jobs:
                raise InvalidArgument.field("job_ids", f"at most {self.limits.max_stream_jobs} ids")
            for i, jid in enumerate(req.job_ids):
                validation.check_job_id(jid, f"job_ids[{i}]")
            return Subscription(ns, frozenset(req.job_ids), "")
        if not req.queue:
            raise InvalidArgument.field("job_ids", "name job ids or a queue to follow")
        validation.check_name(req.queue, "queue")
        return Subscription(ns, frozenset(), req.queue)

    async def follow(self, req: StreamRequest) -> AsyncIterator[JobUpdate]:
        sub = self._check(req)
        try:
            await self.hub.subscribe(sub)
            async for update in self._run(sub):
                yield update
        finally:
            self.hub.unsubscribe(sub)

    async def _snapshot(self, sub: Subscription) -> list[Job]:
        if not sub.job_ids:
            return await self.runs.live_in_queue(
                sub.namespace, sub.queue, self.limits.max_stream_jobs
            )
        jobs = await self.runs.get_many(sorted(sub.job_ids))
        for jid in sorted(sub.job_ids):
            if jid not in jobs or jobs[jid].namespace != sub.namespace:
                raise JobNotFound("no job with this id", {"job_id": jid})
        return [jobs[j] for j in sorted(sub.job_ids)]

    async def _run(self, sub: Subscription) -> AsyncIterator[JobUpdate]:
        seen = _Seen()
        for job in await self._snapshot(sub):
            yield _from_job(job)
            seen.record(job.id, job.queue, job.version, job.state.terminal)
        while seen.live or not sub.job_ids:
            try:
                async with asyncio.timeout(POLL_S):  # not wait_for: see wait_for_change
                    await sub.woken.wait()
            except TimeoutError:
                sub.pending.update(seen.live)  # the backstop: look at every live job again
            sub.woken.clear()
            look, sub.pending = sub.pending, set()
            if sub.job_ids:
                look &= set(seen.live)
            async for update in self._catch_up(look, seen):
                yield update

    async def _catch_up(self, look: set[str], seen: _Seen) -> AsyncIterator[JobUpdate]:
        if not look:
            return
        unknown = [j for j in look if j not in seen.queues]
        if unknown:
            for jid, found in (await self.runs.get_many(unknown)).items():
                seen.queues[jid] = found.queue
        events = await self.runs.events_after(
            {j: seen.version(j) for j in look if j in seen.queues}
        )
        finished = [e.job_id for e in events if e.state.terminal]
        final_jobs = await self.runs.get_many(finished) if finished else {}
        for e in events:
            if e.version <= seen.version(e.job_id):
                continue
            job: Job | None = final_jobs.get(e.job_id) if e.state.terminal else None
            if job is None and seen.version(e.job_id) == 0:  # first message about this job
                job = (await self.runs.get_many([e.job_id])).get(e.job_id)
            yield _from_event(e, seen.queues[e.job_id], job)
            seen.record(e.job_id, seen.queues[e.job_id], e.version, e.state.terminal)


class _Seen:
    """Per stream: the last version sent for each job, live ones apart from finished ones."""

    FINISHED_MEMORY = 10_000

    def __init__(self) -> None:
        self.live: dict[str, int] = {}
        self.finished: dict[str, int] = {}
        self.queues: dict[str, str] = {}

    def version(self, job_id: str) -> int:
        return self.live.get(job_id) or self.finished.get(job_id) or 0

    def record(self, job_id: str, queue: str, version: int, terminal: bool) -> None:
        self.queues[job_id] = queue
        if terminal:
            self.live.pop(job_id, None)
            self.finished[job_id] = version
            if len(self.finished) > self.FINISHED_MEMORY:  # oldest first: dicts keep order
                oldest = next(iter(self.finished))
                del self.finished[oldest]
                self.queues.pop(oldest, None)
        else:
            self.live[job_id] = version
