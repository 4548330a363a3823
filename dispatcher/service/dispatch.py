"""Domain operations of the dispatcher: enqueue, status, lease, heartbeat, ack, nack.

Every write follows one order: commit the SQL transaction first, then update
the Redis index. A crash or a Redis failure between the two leaves SQL right
and Redis stale; the reaper and the reconciler repair Redis from SQL. The
one exception is Lease, which must pick atomically: Redis picks and records a
provisional lease first, then SQL confirms it with a compare-and-set on the
job's state; a pick that SQL does not confirm is put back. A new job handed
straight to a waiting Lease (`service/handoff.py`) follows the same order: its
lease is recorded in Redis, then its row inserted already leased.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar, Union

from dispatcher import telemetry
from dispatcher.clock import Clock
from dispatcher.domain import auth, idempotency, ids, transitions, validation
from dispatcher.domain.errors import (
    AlreadyExists,
    DispatchError,
    InvalidArgument,
    JobCancelled,
    JobNotFound,
    LeaseExpired,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from dispatcher.domain.limits import Limits
from dispatcher.domain.models import (
    Acked,
    AckItem,
    EnqueueCall,
    Enqueued,
    Extended,
    GrantedLease,
    HeartbeatItem,
    Job,
    JobChange,
    JobSpec,
    JobState,
    LeaseRequest,
    NackItem,
    Placeable,
    Settled,
    constructor,
    evolve,
)
from dispatcher.service import dependencies, enqueue_calls
from dispatcher.service.group_commit import GroupCommit
from dispatcher.service.handoff import HandOffs, Offer
from dispatcher.service.index_behind import IndexBehind
from dispatcher.service.late_notices import LateNotices
from dispatcher.service.queues import QueueControl, queue_full
from dispatcher.service.quotas import Quotas
from dispatcher.service.state import ServingState
from dispatcher.service.wakeups import Asker, Waiters
from dispatcher.service.workers import WorkerRegistry
from dispatcher.store.redis.index import Notice, RedisIndex
from dispatcher.store.sql.runs import AckHeld, CallRecorded, DuplicateKey, RunStore, RunsTx

logger = logging.getLogger(__name__)

T = TypeVar("T")
Outcome: TypeAlias = Union[T, DispatchError]  # noqa: UP007 (a generic alias needs Union)

# How often a waiting Lease looks again even without a wake-up, in case a
# wake-up message was lost (a pub/sub reconnect): a backstop, not the path.
RECHECK_S = 1.0

# At most this many concurrent Enqueue calls share one transaction (each call
# may carry a whole batch): enough to pay BEGIN and COMMIT once for a burst.
GROUP_COMMIT_CALLS = 32


def notices(changes: Sequence[JobChange]) -> list[Notice]:
    """The update notices of the changes that moved a job to a new version."""
    return job_notices(c.after for c in changes if c.after.version != c.before.version)


def job_notices(jobs: Iterable[Placeable]) -> list[Notice]:
    """An update notice for each job, at the version it has."""
    return [(j.id, j.namespace, j.queue, j.version) for j in jobs]


def one_or_many(results: list[Outcome[T]]) -> list[Outcome[T]]:
    """A call with exactly one item fails as a whole when that item fails (see the proto)."""
    if len(results) == 1 and isinstance(results[0], DispatchError):
        raise results[0]
    return results


def single(results: Sequence[Outcome[T]]) -> T:
    """The result of a one-item batch, raising its error as the call's error."""
    (only,) = results
    if isinstance(only, DispatchError):
        raise only
    return only


@dataclass
class InsertRequest:
    """One Enqueue call's valid jobs, on their way into a shared transaction."""

    namespace: str
    valid: list[tuple[int, JobSpec, int]]  # (index in the call, spec, run_at)
    now: int
    results: list[Outcome[Enqueued] | None]  # the call's answers, filled in place
    single: bool  # an Enqueue (errors name "job"), not an EnqueueBatch ("jobs[i]")
    trace_context: dict[str, str]  # the caller's, stored with its jobs
    # Given the call's jobs as they are inserted: while the insert runs, or
    # after it on SQLite (`Dispatcher._while_inserting`).
    while_inserting: Callable[[list[Job]], None] | None = None
    request_id: str = ""  # an EnqueueBatch's (service/enqueue_calls.py)
    specs: Sequence[JobSpec | InvalidArgument] = ()  # every item's, for a repeat's answer
    failure: DispatchError | None = None  # the call fails whole (a reused request_id)


@dataclass
class _Draft:
    request: InsertRequest
    i: int
    spec: JobSpec
    job: Job


@dataclass
class Dispatcher:
    """The domain service. No gRPC here: requests and answers are domain values."""

    runs: RunStore
    index: RedisIndex
    clock: Clock
    limits: Limits = field(default_factory=Limits)
    state: ServingState = field(default_factory=ServingState)
    waiters: Waiters = field(default_factory=Waiters)
    rng: random.Random = field(default_factory=random.Random)
    id_gen: ids.JobIdGenerator = field(default_factory=ids.JobIdGenerator)
    workers: WorkerRegistry | None = None
    # Queue settings (maximum depth) checked before anything is written.
    queues: QueueControl | None = None
    quotas: Quotas | None = None
    # Checks where a callback URL points (SSRF) before anything is written.
    url_guard: Callable[[str, str], Awaitable[None]] | None = None
    # Index writes made after Enqueue answers (see `IndexBehind`), shared with the
    # services that read the index for a caller: `index_behind` makes one if unset.
    behind: IndexBehind | None = None
    _inserts: GroupCommit[InsertRequest, list[Job]] | None = field(default=None, repr=False)
    _late_notices: LateNotices | None = field(default=None, repr=False)
    _hand_offs: HandOffs | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.state.on_drain(self.waiters.notify_all)  # draining ends waiting Leases

    @property
    def late_notices(self) -> LateNotices:
        """Update notices published after the reply (see `LateNotices`)."""
        if self._late_notices is None:
            # `place` with no jobs only publishes the notices.
            self._late_notices = LateNotices(functools.partial(self.index.place, []))
        return self._late_notices

    @property
    def index_behind(self) -> IndexBehind:
        if self.behind is None:
            self.behind = IndexBehind(self.index, self.waiters, self.state)
        return self.behind

    @property
    def hand_offs(self) -> HandOffs:
        """New jobs handed straight to waiting Leases (see `service/handoff.py`)."""
        if self._hand_offs is None:
            self._hand_offs = HandOffs(self.waiters, self.index, self.quotas, self.queues)
        return self._hand_offs

    # ---- enqueue -------------------------------------------------------

    async def enqueue(self, namespace: str, spec: JobSpec) -> Enqueued:
        results = await self.enqueue_batch(namespace, [spec], field_prefix="job")
        return single(results)

    async def enqueue_batch(
        self,
        namespace: str,
        specs: Sequence[JobSpec | InvalidArgument],
        field_prefix: str = "jobs",
        while_inserting: Callable[[list[Job]], None] | None = None,
        request_id: str = "",
        defaults: JobSpec | None = None,
    ) -> list[Outcome[Enqueued]]:
        """Validate, commit to SQL, answer, then index (`IndexBehind`). Invalid
        items are not written.

        With a `request_id` the call is recorded with its jobs, and a repeat of
        it (the same request_id in the namespace, within the idempotency window)
        creates nothing and is answered from the record
        (`service/enqueue_calls.py`).

        `while_inserting`, if given, gets the new jobs (the valid items', in
        order) once their insert has gone out (`_while_inserting`), so that a
        caller can prepare its answer while the database commits. The call
        answers with those same objects unless the insert found a key taken.
        Jobs that need a transaction (dependencies; keys on some jobs only) are
        not given at all.

        Allowed while the index is being rebuilt: the rebuild and this write
        both place the job from its SQL row, and placing is idempotent.
        """
        ns = validation.namespace(namespace)
        validation.batch_size(len(specs), self.limits, field_prefix)
        if defaults is not None:  # `specs` are merged with them: checked alone, they fail the call
            validation.defaults(defaults, self.limits)
            if defaults.callback_url and self.url_guard is not None:
                await self.url_guard(defaults.callback_url, "defaults.callback_url")
        validation.request_id(request_id, specs, field_prefix)
        now = self.clock.now_ms()
        results: list[Outcome[Enqueued] | None] = [None] * len(specs)
        valid = await self._valid(specs, defaults is not None, now, field_prefix, results)
        if self.queues is not None and valid:
            full = await self.queues.full_queues(ns, [spec for _, spec, _ in valid])
            for i, spec, _ in valid:
                if spec.queue in full:
                    results[i] = queue_full(spec.queue)
            valid = [v for v in valid if v[1].queue not in full]
        if self.quotas is not None:
            await self.quotas.check_enqueue(ns, len(valid))
        request = InsertRequest(
            ns,
            valid,
            now,
            results,
            field_prefix == "job",
            telemetry.current_trace_context(),
            while_inserting,
            request_id,
            specs,
        )
        created = await self._insert_idempotently(request)
        if request.failure is not None:
            raise request.failure
        await self._index_created(created)
        for (q_ns, q_name), n in Counter((j.namespace, j.queue) for j in created).items():
            telemetry.jobs_enqueued.add(n, telemetry.attrs(q_ns, q_name))
        return one_or_many([r for r in results if r is not None])

    async def _valid(
        self,
        specs: Sequence[JobSpec | InvalidArgument],
        defaults_checked: bool,
        now: int,
        field_prefix: str,
        results: list[Outcome[Enqueued] | None],
    ) -> list[tuple[int, JobSpec, int]]:
        """(index, spec, run time) of each valid item; each invalid one's error
        goes to `results`. An item over the call's defaults, once they are
        checked, has only its own fields checked (`JobSpec.from_defaults`)."""
        valid: list[tuple[int, JobSpec, int]] = []
        for i, spec in enumerate(specs):
            prefix = field_prefix if field_prefix == "job" else f"{field_prefix}[{i}]"
            if isinstance(spec, InvalidArgument):  # could not even be converted
                results[i] = spec
                continue
            if spec.from_defaults and not defaults_checked:  # a flag without its defaults
                spec = dataclasses.replace(spec, from_defaults=False)  # is not trusted
            try:
                if spec.from_defaults:
                    validation.own_fields(spec, self.limits, prefix)
                else:
                    validation.spec(spec, self.limits, prefix)
                    if spec.callback_url and self.url_guard is not None:
                        await self.url_guard(spec.callback_url, f"{prefix}.callback_url")
                valid.append((i, spec, validation.run_at(spec, now, self.limits, prefix)))
            except InvalidArgument as exc:
                results[i] = exc
        return valid

    async def _index_created(self, created: Sequence[Job]) -> None:
        """Make new jobs leasable, after the answer, and announce them all."""
        if all(j.state is JobState.LEASED for j in created):
            # handed to waiting Leases: already in Redis
            self.late_notices.send(job_notices(created))
            return
        # A job born WAITING (dependencies) or CANCELLED is not ready: it is indexed
        # by the transition that makes it QUEUED or SCHEDULED, if one ever does.
        runnable: list[Job] = []
        others: list[Job] = []
        for j in created:
            (runnable if j.state in (JobState.QUEUED, JobState.SCHEDULED) else others).append(j)
        # The index write announces the jobs it indexes (enqueue.lua); this
        # replica's readers wait for it (`IndexBehind.caught_up`).
        await self.index_behind.add(runnable, job_notices(others))

    async def _insert_idempotently(self, request: InsertRequest) -> list[Job]:
        """Commit one call's jobs, in a transaction shared with concurrent calls."""
        if self._inserts is None:
            self._inserts = GroupCommit(self._insert_group, max_requests=GROUP_COMMIT_CALLS)
        return await self._inserts.submit(request)

    async def _insert_group(self, requests: Sequence[InsertRequest]) -> list[list[Job]]:
        """Insert the jobs of every request (`_insert_calls`), answering from its
        record each call that repeats one already recorded; the jobs created, per
        request.

        A recorded request_id fails the whole insert (`CallRecorded`), which then
        runs again without the repeats. A call repeated within one group (a
        retry sent while the first try still waits) waits for the first's record.
        A call with nothing to insert looks for its record first.
        """
        created: dict[int, list[Job]] = {}
        # A repeat with nothing to insert (its items refused this time) meets no
        # record by inserting: it looks for one.
        answered = await self._answer_repeats([r for r in requests if r.request_id and not r.valid])
        pending = [r for r in requests if id(r) not in answered]
        for _ in range(5):
            if not pending:
                break
            first, later = _first_of_each_call(pending)
            try:
                for r, jobs in zip(first, await self._insert_calls(first), strict=True):
                    created[id(r)] = jobs
                pending = later
            except CallRecorded:
                pass  # some call of `first` is a repeat: found below
            answered = await self._answer_repeats(pending)
            pending = [r for r in pending if id(r) not in answered]
        if pending:
            raise Unavailable("could not settle a repeated request_id; retry")
        return [created.get(id(r), []) for r in requests]

    async def _answer_repeats(self, requests: Sequence[InsertRequest]) -> set[int]:
        """Answer each request whose request_id is recorded from its record;
        the ids of the requests answered. A record past the idempotency window
        is deleted instead, and its request is left to insert."""
        answered: set[int] = set()
        window = self.limits.idempotency_window_ms
        for ns in {r.namespace for r in requests if r.request_id}:
            here = [r for r in requests if r.namespace == ns and r.request_id]
            calls = {
                c.request_id: c
                for c in await self.runs.recorded_calls(ns, [r.request_id for r in here])
            }
            stale = [c for c in calls.values() if enqueue_calls.expired(c, here[0].now, window)]
            if stale:
                async with self.runs.transaction() as tx:
                    await tx.forget_calls(stale)
            live = [r for r in here if r.request_id in calls and calls[r.request_id] not in stale]
            ids = [job_id for r in live for job_id in calls[r.request_id].items if job_id]
            jobs = await self.runs.get_many(ids)
            for r in live:
                prefix = "job" if r.single else "jobs"
                valid = {i for i, _, _ in r.valid}
                refused = {
                    i: out
                    for i, out in enumerate(r.results)
                    if i not in valid and isinstance(out, DispatchError)
                }
                try:
                    outcomes = enqueue_calls.answer(
                        calls[r.request_id], r.specs, refused, jobs, prefix
                    )
                except DispatchError as exc:
                    r.failure = exc
                else:
                    for i, outcome in outcomes.items():
                        r.results[i] = outcome
                answered.add(id(r))
        return answered

    async def _insert_calls(self, requests: Sequence[InsertRequest]) -> list[list[Job]]:
        """Insert the jobs of every request; a job whose key is taken gets the key's job.

        The insert skips taken keys by itself, so only a collision costs a lookup.
        A collision is decided by `idempotency.decide`: the same request within the
        window gets the earlier job, a different one ALREADY_EXISTS, and a key past
        its window is taken from the old job and the insert tried again. Two items
        with one key, in one batch or in two calls of the group, collide the same way.

        A group without dependencies is first inserted in one write that commits
        by itself (`RunStore.insert_committed`); only the jobs whose keys collided
        go on to a transaction. That first step is taken only when every job carries an
        idempotency key or none does: if the second step then fails, the call fails
        with jobs already committed, and only a key makes its retry safe (a job
        without one cannot collide, so a group without keys has no second step).
        """
        created: list[_Draft] = []
        left: list[_Draft] | None = None  # None: every draft is still to be made
        if _insertable_at_once(requests):
            drafts = [d for r in requests for d in await self._drafts(None, r)]
            offers = self._offer_to_waiters(drafts)
            calls = _call_records(requests, drafts)
            inserted, recorded = await self._while_inserting(
                requests, drafts, self._insert_and_record(drafts, offers, calls)
            )
            missed = {job_id: o for job_id, o in offers.items() if job_id not in inserted}
            if missed:  # a taken key: the job goes on as enqueued, to settle the key
                for d in drafts:
                    if d.job.id in missed:
                        d.job = missed[d.job.id].queued
                await self.hand_offs.withdraw(missed.values())
            created = self._mark_created(drafts, inserted)
            kept = [o for job_id, o in offers.items() if job_id in inserted]
            await self._give_back_refused([o for o in kept if o.leased.id not in recorded])
            await self._deliver([o for o in kept if o.leased.id in recorded])
            left = [d for d in drafts if d.job.id not in inserted]
        if left is None or left:
            created += await self._insert_in_transaction(requests, left)
        return [[d.job for d in created if d.request is r] for r in requests]

    async def _while_inserting(
        self, requests: Sequence[InsertRequest], drafts: Sequence[_Draft], insert: Awaitable[T]
    ) -> T:
        """Await `insert`, giving each request's `while_inserting` its jobs once
        the insert has gone out, so that the work is done while the database
        commits instead of after (on PostgreSQL; SQLite commits on a thread of
        this process that needs the interpreter lock for much of its work, and
        measured slower with work beside it: there the jobs are given after)."""
        hooks = [r for r in requests if r.while_inserting is not None]
        if not hooks:
            return await insert
        if not self.runs.commits_in_another_process:
            out = await insert
            _give_jobs(hooks, drafts)
            return out
        running = asyncio.ensure_future(insert)
        try:
            await asyncio.sleep(0)  # the insert runs up to its wait for the database
        except BaseException:
            running.cancel()
            raise
        _give_jobs(hooks, drafts)
        return await running

    def _offer_to_waiters(self, drafts: Sequence[_Draft]) -> dict[str, Offer]:
        """Claim idle Leases for what jobs they can take: those drafts become the leased jobs."""
        if self.state.draining.is_set() or not drafts:
            return {}
        now = max(d.request.now for d in drafts)  # calls of one group differ by microseconds
        offers = self.hand_offs.claim([d.job for d in drafts], now)
        for d in drafts:
            offer = offers.get(d.job.id)
            if offer is not None:
                d.job = offer.leased
        return offers

    async def _insert_and_record(
        self, drafts: Sequence[_Draft], offers: dict[str, Offer], calls: Sequence[EnqueueCall]
    ) -> tuple[set[str], set[str]]:
        """Insert the drafts, with the records of `calls`, in a write that commits
        by itself and, meanwhile, record the offers' leases in Redis; (ids
        inserted, ids recorded).

        On failure the offers are withdrawn once their Redis write is over, so
        that no lease is recorded after it was forgotten."""
        if not offers:
            return await self.runs.insert_committed([d.job for d in drafts], calls), set()
        recording = asyncio.ensure_future(self.hand_offs.record(offers.values()))
        try:
            inserted = await self.runs.insert_committed([d.job for d in drafts], calls)
        except BaseException:
            await asyncio.wait([recording])
            if not recording.cancelled():
                recording.exception()  # the insert's failure is the one reported
            await self.hand_offs.withdraw(offers.values())
            raise
        try:
            return inserted, await recording
        except Exception:  # Redis's own failures are handled by `record`: this is a bug
            # The jobs are committed, so the call succeeds (as `_index_after_commit`):
            # failing it would make the client enqueue them again. They are given back.
            logger.exception("recording handed-off leases failed; their jobs are given back")
            return inserted, set()

    async def _give_back_refused(self, offers: Sequence[Offer]) -> None:
        """Jobs committed LEASED whose lease Redis refused (their queue was paused
        or limited through another replica since this one read its settings):
        release their waiters and give the jobs back, to take the general path."""
        for o in offers:
            o.waiter.release()
        await self._give_back_for_askers(offers)

    async def _deliver(self, offers: Sequence[Offer]) -> None:
        """Answer the waiters of jobs inserted leased; give back those whose waiter left."""
        now = self.clock.now_ms()
        gone = []
        for o in offers:
            a = telemetry.attrs(o.leased.namespace, o.leased.queue)
            telemetry.jobs_leased.add(1, a)
            telemetry.enqueue_to_start.record(max(0, now - o.leased.run_at_ms) / 1000, a)
            if not o.waiter.hand(o.lease):
                gone.append(o)
        await self._give_back_for_askers(gone)

    async def _give_back_for_askers(self, offers: Sequence[Offer]) -> None:
        """Give back the leases of these offers, each as its waiter itself would:
        a lease answers to its credential."""
        for o in offers:
            asker = o.waiter.asker
            assert asker is not None
            reset = auth.current_principal.set(asker.principal)
            try:
                await self._give_back(o.leased.namespace, [o.lease])
            finally:
                auth.current_principal.reset(reset)

    async def _insert_in_transaction(
        self, requests: Sequence[InsertRequest], left: list[_Draft] | None
    ) -> list[_Draft]:
        """Insert in one transaction the given drafts (or, if None, every request's),
        settling collided keys; return the drafts created."""
        for _ in range(5):
            try:
                async with self.runs.transaction() as tx:
                    if left is None:
                        drafts = [d for r in requests for d in await self._drafts(tx, r)]
                        # A call with a request_id has no keys: all its drafts insert.
                        await tx.record_calls(_call_records(requests, drafts))
                    else:  # the calls were recorded with the first insert
                        drafts = await self._settle_collisions(tx, left)
                    created: list[_Draft] = []
                    for _round in range(3):  # a released key needs a second insert
                        inserted = await tx.insert([d.job for d in drafts])
                        created += self._mark_created(drafts, inserted)
                        collided = [d for d in drafts if d.job.id not in inserted]
                        drafts = await self._settle_collisions(tx, collided)
                        if not drafts:
                            break
                    else:
                        raise DuplicateKey()
                    await tx.add_dependencies(
                        [(d.job.id, dep) for d in created for dep in d.job.depends_on]
                    )
                return created
            except DuplicateKey:
                continue
        raise Unavailable("could not settle a concurrent idempotency key; retry")

    @staticmethod
    def _mark_created(drafts: Sequence[_Draft], inserted: set[str]) -> list[_Draft]:
        """Answer each inserted draft's call with its new job; return those drafts."""
        created = [d for d in drafts if d.job.id in inserted]
        for d in created:
            d.request.results[d.i] = Enqueued(d.job, created=True)
        return created

    async def _drafts(self, tx: RunsTx | None, r: InsertRequest) -> list[_Draft]:
        """The job each valid spec would create (dependencies decide its first state;
        `tx` may be None when no spec has any)."""
        drafts = []
        shared: Job | None = None  # the job of the request's first item over its defaults
        for i, spec, run_at in r.valid:
            if spec.from_defaults and shared is not None:
                # The same defaults, the same moment: the same job but for its id,
                # payload and key (what `_new_job` would make: the test compares).
                job = evolve(
                    shared,
                    id=self.id_gen.new(r.now),
                    payload=spec.payload,
                    idempotency_key=spec.idempotency_key or None,
                    metadata=dict(shared.metadata),  # each job owns its dict and list
                    depends_on=[*shared.depends_on],
                )
            else:
                job = self._new_job(r.namespace, spec, run_at, r.now, r.trace_context)
                if spec.from_defaults:
                    shared = job
            if spec.depends_on:
                assert tx is not None
                try:
                    prefix = "job" if r.single else f"jobs[{i}]"
                    job = await self._with_dependencies(tx, r.namespace, spec, job, prefix)
                except InvalidArgument as exc:
                    r.results[i] = exc
                    continue
            drafts.append(_Draft(r, i, spec, job))
        return drafts

    async def _settle_collisions(self, tx: RunsTx, collided: list[_Draft]) -> list[_Draft]:
        """Decide each job whose key was taken; return those to insert again."""
        again: list[_Draft] = []
        released: list[str] = []
        for ns in {d.request.namespace for d in collided}:
            here = [d for d in collided if d.request.namespace == ns]
            existing = await tx.by_idempotency_keys(ns, [d.spec.idempotency_key for d in here])
            for d in here:
                holder = existing.get(d.spec.idempotency_key)
                if holder is None:  # the holder lost its key meanwhile: insert again
                    again.append(d)
                    continue
                try:
                    window = self.limits.idempotency_window_ms
                    decision = idempotency.decide(holder, d.spec, d.request.now, window)
                except AlreadyExists as exc:
                    d.request.results[d.i] = exc
                    continue
                if decision is idempotency.Decision.REUSE:
                    d.request.results[d.i] = Enqueued(holder, created=False)
                    continue
                if holder.id not in released:
                    released.append(holder.id)
                again.append(d)
        await tx.release_idempotency_keys(released)
        return again

    async def _with_dependencies(
        self, tx: RunsTx, ns: str, spec: JobSpec, job: Job, prefix: str
    ) -> Job:
        state, failed = await dependencies.initial_state(tx, ns, spec, prefix)
        if state is JobState.WAITING:
            return evolve(job, state=JobState.WAITING)
        if state is JobState.CANCELLED:
            # Born cancelled: apply the transition to a version-0 draft so that the
            # row starts at version 1 like every new job.
            draft = evolve(job, state=JobState.WAITING, version=0)
            return transitions.fail_dependency(draft, failed, JobState.CANCELLED, job.created_ms)
        return job

    def _new_job(
        self, ns: str, spec: JobSpec, run_at: int, now: int, trace_context: dict[str, str]
    ) -> Job:
        # The keys are `_NEW_JOB_FIELDS`; tests/unit/test_construct.py compares
        # the job with `construct`'s.
        return _make_new_job(
            {
                "id": self.id_gen.new(now),
                "namespace": ns,
                "queue": spec.queue,
                "type": spec.type,
                "payload": spec.payload,
                "content_type": spec.content_type,
                "priority": spec.priority,
                "metadata": dict(spec.metadata),
                "state": JobState.QUEUED if run_at <= now else JobState.SCHEDULED,
                "attempt": 0,
                "max_attempts": spec.max_attempts or self.limits.default_max_attempts,
                "retry_policy": validation.retry_policy(spec.retry_policy),
                "lease_duration_ms": spec.lease_duration_ms or self.limits.default_lease_ms,
                "created_ms": now,
                "run_at_ms": run_at,
                "idempotency_key": spec.idempotency_key or None,
                "trace_context": trace_context,
                "callback_url": spec.callback_url,
                "concurrency_key": spec.concurrency_key,
                "start_deadline_ms": None
                if spec.start_within_ms is None
                else run_at + spec.start_within_ms,
                "max_run_ms": spec.max_run_ms,
                "depends_on": list(spec.depends_on),
            }
        )

    async def _index_after_commit(self, write: Awaitable[None]) -> None:
        """Run a Redis write that follows a commit; on failure, leave it to the reconciler.

        The SQL commit already happened, so the call succeeds: failing it would
        make the client retry something that is already done.
        """
        try:
            await write
        except Unavailable:
            logger.warning("index update failed after commit; the reconciler will repair it")
            self.state.request_repair()

    # ---- status --------------------------------------------------------

    async def get(self, namespace: str, job_id: str) -> Job:
        ns = validation.namespace(namespace)
        validation.check_job_id(job_id)
        job = await self.runs.get(job_id)
        if job is None or job.namespace != ns:
            raise JobNotFound("no job with this id", {"job_id": job_id})
        return evolve(job, wait_reason=await self._wait_reason(job))

    async def _wait_reason(self, job: Job) -> str:
        """Why a job that has not started waits, so that a held-back job is never a mystery."""
        if job.state is JobState.WAITING:
            states = await self.runs.get_many(job.depends_on)
            pending = [d for d in job.depends_on if d in states and not states[d].state.terminal]
            return f"waiting for {len(pending)} dependencies: {', '.join(pending[:5])}"
        if job.state is JobState.SCHEDULED:
            return "retry backoff" if job.attempt else "not before run_at"
        if job.state is JobState.QUEUED and self.queues is not None:
            settings = self.queues.settings(job.namespace, job.queue)
            if settings.paused:
                return "queue paused"
            if job.concurrency_key and settings.key_max_concurrency:
                held = await self.index.key_leased_count(
                    job.namespace, job.queue, job.concurrency_key
                )
                if held >= settings.key_max_concurrency:
                    return f"concurrency limit of key {job.concurrency_key!r}: {held} leased"
            if settings.max_concurrency or settings.rate_per_s or settings.key_rate_per_s:
                return "queue limits may hold it back (concurrency or rate)"
        return ""

    # ---- lease ---------------------------------------------------------

    async def lease(self, req: LeaseRequest) -> list[GrantedLease]:
        """Long-poll until at least one job is leased or the wait ends."""
        self.state.require_serving()
        ns, queues, max_jobs, duration = self._check_lease_request(req)
        if self.workers is not None:
            self.workers.saw(ns, req.worker_id)
        deadline = time.monotonic() + min(max(req.wait_ms, 0), self.limits.max_wait_ms) / 1000
        refs = [(ns, q) for q in queues]
        if req.wait_ms > 0 and self.waiters.count_in(ns) >= self.limits.max_waiters_per_namespace:
            raise ResourceExhausted(
                "too many long-polls are waiting in this namespace",
                {"namespace": ns},
                retry_after_ms=1000,
            )
        await self.index_behind.caught_up()  # jobs of answered Enqueues are in the index
        asker = Asker(req.worker_id, duration, auth.current_principal.get())
        with self.waiters.waiting(refs, asker) as waiter:
            try:
                first = True
                while True:
                    handed = waiter.take_handed()  # a job an Enqueue handed over
                    if handed:
                        return handed
                    # The first look and each backstop look cover every queue; a look
                    # after wake-ups, only the queues woken (in the order asked).
                    woken = set(waiter.take())
                    look_at = [q for q in queues if first or not woken or (ns, q) in woken]
                    first = False
                    granted = await self._lease_once(ns, req.worker_id, look_at, max_jobs, duration)
                    remaining = deadline - time.monotonic()
                    if granted or remaining <= 0 or self.state.draining.is_set():
                        return granted
                    waiter.idle = True
                    try:
                        await waiter.wait(min(remaining, RECHECK_S))
                    finally:
                        waiter.idle = False
            finally:
                # Gone before any await: a hand-off still on its way gives its job back.
                waiter.gone = True
                await self._give_back(ns, waiter.take_handed())

    def _check_lease_request(self, req: LeaseRequest) -> tuple[str, list[str], int, int | None]:
        ns = validation.namespace(req.namespace)
        validation.check_worker_id(req.worker_id)
        out = validation.Violations()
        if not 1 <= len(req.queues) <= self.limits.max_queues_per_lease:
            out.add("queues", f"must name 1 to {self.limits.max_queues_per_lease} queues")
        for i, q in enumerate(req.queues):
            validation.check_name(q, f"queues[{i}]", out)
        max_jobs = req.max_jobs or 1
        if not 1 <= max_jobs <= self.limits.max_batch:
            out.add("max_jobs", f"must be between 1 and {self.limits.max_batch}")
        if req.lease_duration_ms is not None:
            validation.check_duration(
                out,
                "lease_duration",
                req.lease_duration_ms,
                self.limits.min_lease_ms,
                self.limits.max_lease_ms,
            )
        out.raise_if_any()
        return ns, list(dict.fromkeys(req.queues)), max_jobs, req.lease_duration_ms

    async def _lease_once(
        self, ns: str, worker: str, queues: list[str], max_jobs: int, duration: int | None
    ) -> list[GrantedLease]:
        granted: list[GrantedLease] = []
        for queue in queues:
            want = max_jobs - len(granted)
            if want <= 0:
                break
            if self.quotas is not None:
                want = await self.quotas.lease_room(ns, want)
            # Shielded: once Redis has handed out ids, SQL must settle them even
            # if the caller goes away; and then they are given back at once
            # (a worker stopping cancels its long-poll), not left to the reaper.
            step = asyncio.ensure_future(self._lease_from(ns, queue, worker, want, duration))
            try:
                granted += await asyncio.shield(step)
            except asyncio.CancelledError:
                granted += await step
                await self._give_back(ns, granted)
                raise
        return granted

    async def _give_back(self, ns: str, granted: list[GrantedLease]) -> None:
        """Release leases whose caller went away before it could receive them."""
        if not granted:
            return
        error = "the caller went away before it received the lease"
        items = [NackItem(g.token, error, release=True) for g in granted]
        try:
            await self.nack(ns, items)
        except DispatchError as exc:  # the reaper expires them instead
            logger.warning("could not give back %d abandoned leases: %s", len(items), exc.reason)

    async def _lease_from(
        self, ns: str, queue: str, worker: str, want: int, duration: int | None
    ) -> list[GrantedLease]:
        now = self.clock.now_ms()
        provisional = now + (duration or self.limits.default_lease_ms)
        picked = await self.index.lease(ns, queue, want, provisional, now)
        if not picked:
            return []
        # The plain case, a QUEUED job, in one statement where the store can;
        # whatever it leaves is decided in a transaction.
        leased = await self.runs.lease_queued(
            ns,
            [(job_id, ids.new_lease_token(job_id)) for job_id in picked],
            worker,
            now,
            duration or None,
            auth.principal_id(),
        )
        rest = [job_id for job_id in picked if job_id not in leased]
        changes, expired, stale = await self._lease_in_transaction(rest, worker, now, duration)
        for c in changes:
            leased[c.after.id] = c.after
        granted = [leased[job_id] for job_id in picked if job_id in leased]  # Redis order
        if granted:
            a = telemetry.attrs(ns, queue)
            telemetry.jobs_leased.add(len(granted), a)
            for job in granted:
                telemetry.enqueue_to_start.record(max(0, now - job.run_at_ms) / 1000, a)
        found = set(leased) | {j.id for j in stale}
        missing = [job_id for job_id in rest if job_id not in found]
        fix = stale + [j for j in granted if j.lease_expires_ms != provisional]
        news = notices(expired) + job_notices(granted)
        if fix:
            await self._index_after_commit(self.index.place(fix, news))
        else:  # Redis already holds the leases as they are: answer first, announce after
            self.late_notices.send(news)
        if missing:
            await self._index_after_commit(self.index.forget(ns, queue, missing))
        return [GrantedLease(j, j.lease_token, j.lease_expires_ms or 0) for j in granted]

    async def _lease_in_transaction(
        self, picked: list[str], worker: str, now: int, duration: int | None
    ) -> tuple[list[JobChange], list[JobChange], list[Job]]:
        """Lock and decide each picked job: lease it, dead-letter it past its start
        deadline, or report it stale (no longer QUEUED). Returns (leased, expired,
        stale); a picked id in none of them has no row."""
        changes: list[JobChange] = []
        expired: list[JobChange] = []
        stale: list[Job] = []
        if not picked:
            return changes, expired, stale
        async with self.runs.transaction() as tx:
            rows = await tx.lock(picked)
            for job_id in picked:
                job = rows.get(job_id)
                if job is None:
                    continue
                if job.state is not JobState.QUEUED:
                    stale.append(job)
                    continue
                if transitions.past_start_deadline(job, now):
                    expired.append(JobChange(job, transitions.expire_unstarted(job, now), now))
                    continue
                token = ids.new_lease_token(job.id)
                after = transitions.lease(
                    job, token, worker, now, duration or job.lease_duration_ms
                )
                after = evolve(after, lease_principal=auth.principal_id())
                changes.append(JobChange(job, after, now))
            expired += await dependencies.propagate(tx, expired, now)
            await tx.save(changes + expired)
        return changes, expired, stale + [c.after for c in expired]

    # ---- cancel --------------------------------------------------------

    async def cancel(self, namespace: str, job_id: str, reason: str) -> Job:
        """Cancel a waiting job at once, or mark a leased one (its worker learns it)."""
        ns = validation.namespace(namespace)
        validation.check_job_id(job_id)
        if len(reason) > 1024:
            raise InvalidArgument.field("reason", "must be at most 1024 characters")
        now = self.clock.now_ms()
        async with self.runs.transaction() as tx:
            job = (await tx.lock([job_id])).get(job_id)
            if job is None or job.namespace != ns:
                raise JobNotFound("no job with this id", {"job_id": job_id})
            after = transitions.cancel(job, reason or "cancelled", now)
            changes = [] if after is job else [JobChange(job, after, now)]
            changes += await dependencies.propagate(tx, changes, now)
            await tx.save(changes)
        await self.index_behind.caught_up()  # an answered Enqueue's write lands first
        await self._index_after_commit(
            self.index.place([c.after for c in changes], notices(changes))
        )
        return after

    # ---- heartbeat, ack, nack ------------------------------------------

    async def heartbeat(
        self, namespace: str, items: Sequence[HeartbeatItem]
    ) -> list[Outcome[Extended]]:
        ns = validation.namespace(namespace)
        validation.batch_size(len(items), self.limits, "items")

        def check(i: int, item: HeartbeatItem) -> None:
            out = validation.Violations()
            validation.progress(
                item.progress_percent, item.progress_message, f"items[{i}].progress", out
            )
            if item.lease_duration_ms is not None:
                validation.check_duration(
                    out,
                    f"items[{i}].lease_duration",
                    item.lease_duration_ms,
                    self.limits.min_lease_ms,
                    self.limits.max_lease_ms,
                )
            out.raise_if_any()

        def apply(job: Job, item: HeartbeatItem, now: int) -> tuple[Job, Extended]:
            after = transitions.extend(job, item, now)
            return after, Extended(item.token, after.lease_expires_ms or 0, after.cancel_requested)

        results, changes = await self._settle(ns, items, check, apply)
        await self._index_after_commit(self.index.extend([c.after for c in changes]))
        if self.workers is not None:
            for c in changes:
                self.workers.saw(ns, c.after.lease_holder)
        return results

    async def ack(self, namespace: str, items: Sequence[AckItem]) -> list[Outcome[Settled]]:
        ns = validation.namespace(namespace)
        validation.batch_size(len(items), self.limits, "items")

        def check(i: int, item: AckItem) -> None:
            if len(item.result) > self.limits.max_payload_bytes:
                raise InvalidArgument.field(
                    f"items[{i}].result", f"must be at most {self.limits.max_payload_bytes} bytes"
                )

        def apply(job: Job, item: AckItem, now: int) -> tuple[Job, Settled]:
            if transitions.already_acked(job, item.token):
                return job, Settled(item.token, job.state)
            after = transitions.ack(job, item, now)
            return after, Settled(item.token, after.state)

        held = await self._ack_held(ns, items, check)
        settled = {i: Settled(items[i].token, job.state) for i, job in held.items()}
        results, changes = await self._settle(ns, items, check, apply, settled)
        acked = list(held.values())
        await self._index_after_commit(
            self.index.place(
                [*(c.after for c in changes), *acked],
                notices(changes) + job_notices(acked),
            )
        )
        record_outcomes(changes, telemetry.jobs_acked)
        record_acks_held(acked)
        return results

    async def _ack_held(
        self, ns: str, items: Sequence[AckItem], check: Callable[[int, AckItem], None]
    ) -> dict[int, Acked]:
        """Ack in one statement the items whose lease is plainly held (see
        `RunStore.ack_held`); return the acked jobs by item index. The rest, and
        any item whose job id repeats in the call, are left to `_settle`."""
        by_job: dict[str, int | None] = {}
        for i, item in enumerate(items):
            try:
                check(i, item)
                job_id = ids.job_id_of_token(item.token, f"items[{i}].lease_token")
            except InvalidArgument:
                continue  # `_settle` reports it
            by_job[job_id] = None if job_id in by_job else i
        plain = {job_id: i for job_id, i in by_job.items() if i is not None}
        if not plain:
            return {}
        acks = [
            AckHeld(job_id, items[i].token, items[i].result, items[i].result_content_type)
            for job_id, i in plain.items()
        ]
        acked = await self.runs.ack_held(ns, acks, self.clock.now_ms(), auth.principal_id())
        return {plain[job_id]: job for job_id, job in acked.items()}

    async def nack(self, namespace: str, items: Sequence[NackItem]) -> list[Outcome[Settled]]:
        ns = validation.namespace(namespace)
        validation.batch_size(len(items), self.limits, "items")

        def check(i: int, item: NackItem) -> None:
            if item.retry_after_ms is not None:
                out = validation.Violations()
                validation.check_duration(
                    out, f"items[{i}].retry_after", item.retry_after_ms, 0, self.limits.max_delay_ms
                )
                out.raise_if_any()

        def apply(job: Job, item: NackItem, now: int) -> tuple[Job, Settled]:
            if transitions.already_nacked(job, item.token):
                return job, Settled(item.token, job.state, job.next_run_ms)
            after = transitions.nack(job, item, now, self.rng)
            return after, Settled(item.token, after.state, after.next_run_ms)

        results, changes = await self._settle(ns, items, check, apply)
        await self._index_after_commit(
            self.index.place([c.after for c in changes], notices(changes))
        )
        record_outcomes(changes, telemetry.jobs_nacked)
        for queue in {
            (c.after.namespace, c.after.queue) for c in changes if c.after.state is JobState.QUEUED
        }:
            self.waiters.notify(queue)
        return results

    async def _settle(
        self,
        ns: str,
        items: Sequence[T_Item],
        check: Callable[[int, T_Item], None],
        apply: Callable[[Job, T_Item, int], tuple[Job, R]],
        settled: dict[int, R] | None = None,
    ) -> tuple[list[Outcome[R]], list[JobChange]]:
        """Shared shape of Heartbeat, Ack and Nack: validate, lock, decide, commit.

        Items already `settled` (by index) are answered as given and not touched.
        """
        results: list[Outcome[R] | None] = [None] * len(items)
        wanted: dict[int, str] = {}
        for i, item in enumerate(items):
            if settled and i in settled:
                results[i] = settled[i]
                continue
            try:
                check(i, item)
                wanted[i] = ids.job_id_of_token(item.token, f"items[{i}].lease_token")
            except InvalidArgument as exc:
                results[i] = exc
        changes: list[JobChange] = []
        if not wanted:
            return one_or_many([r for r in results if r is not None]), changes
        async with self.runs.transaction() as tx:
            now = self.clock.now_ms()
            current = await tx.lock(wanted.values())
            for i, job_id in wanted.items():
                job = current.get(job_id)
                if job is None or job.namespace != ns:
                    results[i] = JobNotFound("no job with this id", {"job_id": job_id})
                    continue
                if not _may_touch_lease(job):
                    results[i] = PermissionDenied(
                        "the lease belongs to another worker credential", {"job_id": job_id}
                    )
                    continue
                try:
                    after, results[i] = apply(job, items[i], now)
                except LeaseExpired as exc:
                    results[i] = exc
                    telemetry.stale_calls.add(1, telemetry.attrs(ns, job.queue))
                    continue
                except JobCancelled as exc:
                    results[i] = exc
                    continue
                if after is not job:
                    changes.append(JobChange(job, after, now))
                    current[job_id] = after
            changes += await dependencies.propagate(tx, changes, now)
            await tx.save(changes)
        return one_or_many([r for r in results if r is not None]), changes


T_Item = TypeVar("T_Item", HeartbeatItem, AckItem, NackItem)
R = TypeVar("R", Extended, Settled)


def record_outcomes(changes: Sequence[JobChange], counter: Any) -> None:
    """Count settled attempts, their run time, and the ones that dead-lettered."""
    for c in changes:
        _record_outcome(counter, c.after, c.before.started_ms, c.at_ms)


def record_acks_held(jobs: Sequence[Acked]) -> None:
    """`record_outcomes` for jobs acked in one statement (their start is unchanged)."""
    for j in jobs:
        _record_outcome(telemetry.jobs_acked, j, j.started_ms, j.finished_ms)


def _record_outcome(
    counter: Any, after: Job | Acked, started_ms: int | None, at_ms: int | None
) -> None:
    a = telemetry.attrs(after.namespace, after.queue)
    counter.add(1, a)
    if started_ms is not None and at_ms is not None:
        telemetry.run_time.record(max(0, at_ms - started_ms) / 1000, a)
    if after.state is JobState.DEAD_LETTERED:
        telemetry.jobs_dead_lettered.add(1, a)


def _give_jobs(requests: Sequence[InsertRequest], drafts: Sequence[_Draft]) -> None:
    """Each request's `while_inserting` gets its jobs."""
    for r in requests:
        assert r.while_inserting is not None
        try:
            r.while_inserting([d.job for d in drafts if d.request is r])
        except Exception:  # a head start only: the call's answer is made without it
            logger.exception("work done while inserting failed")


# The fields a new job is given; the rest start at their defaults (`_new_job`).
_NEW_JOB_FIELDS = (
    "id", "namespace", "queue", "type", "payload", "content_type", "priority", "metadata",
    "state", "attempt", "max_attempts", "retry_policy", "lease_duration_ms", "created_ms",
    "run_at_ms", "idempotency_key", "trace_context", "callback_url", "concurrency_key",
    "start_deadline_ms", "max_run_ms", "depends_on",
)  # fmt: skip
_make_new_job = constructor(Job, _NEW_JOB_FIELDS)


def _call_records(requests: Sequence[InsertRequest], drafts: Sequence[_Draft]) -> list[EnqueueCall]:
    """What the calls with a request_id record of their drafts (`drafts` are
    those of every call of a group), in one pass over the drafts."""
    created: dict[int, list[tuple[int, str]]] = {id(r): [] for r in requests if r.request_id}
    if not created:
        return []
    for d in drafts:
        mine = created.get(id(d.request))
        if mine is not None:
            mine.append((d.i, d.job.id))
    calls = (
        enqueue_calls.record(r.namespace, r.request_id, r.now, len(r.results), created[id(r)])
        for r in requests
        if r.request_id
    )
    return [c for c in calls if c is not None]


def _first_of_each_call(
    requests: Sequence[InsertRequest],
) -> tuple[list[InsertRequest], list[InsertRequest]]:
    """The requests without a request_id or with the first of theirs, and the
    later ones that repeat one of those (answered from its record once it is in)."""
    first: list[InsertRequest] = []
    later: list[InsertRequest] = []
    seen: set[tuple[str, str]] = set()
    for r in requests:
        key = (r.namespace, r.request_id)
        if r.request_id and key in seen:
            later.append(r)
        else:
            seen.add(key)
            first.append(r)
    return first, later


def _insertable_at_once(requests: Sequence[InsertRequest]) -> bool:
    """No dependencies (they need a transaction) and idempotency keys on every
    job or on none (see `Dispatcher._insert_calls`)."""
    specs = [spec for r in requests for _, spec, _ in r.valid]
    keyed = sum(1 for spec in specs if spec.idempotency_key)
    return keyed in (0, len(specs)) and not any(spec.depends_on for spec in specs)


def _may_touch_lease(job: Job) -> bool:
    """A lease token only works for the credential that leased it (when auth is on)."""
    caller = auth.principal_id()
    return not (caller and job.lease_principal and caller != job.lease_principal)
