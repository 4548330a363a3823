"""Every conversion between protobuf messages and domain values.

Enum tables are explicit dicts; tests/unit/test_convert.py checks that every
proto value except *_UNSPECIFIED maps both ways.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf import duration_pb2, timestamp_pb2

from dispatcher.api.errors import code_of
from dispatcher.domain import models as m
from dispatcher.domain.errors import DispatchError, InvalidArgument
from dispatcher.domain.validation import DEFAULT_RETRY
from worker_sdk._proto.dispatch.v1 import admin_pb2 as apb
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2 as pb
from worker_sdk._proto.dispatch.v1 import job_pb2 as jpb

PRIORITY_TO_DOMAIN: dict[int, m.Priority] = {
    jpb.PRIORITY_UNSPECIFIED: m.Priority.DEFAULT,
    jpb.PRIORITY_CRITICAL: m.Priority.CRITICAL,
    jpb.PRIORITY_HIGH: m.Priority.HIGH,
    jpb.PRIORITY_DEFAULT: m.Priority.DEFAULT,
    jpb.PRIORITY_LOW: m.Priority.LOW,
}
PRIORITY_TO_PROTO: dict[m.Priority, int] = {
    m.Priority.CRITICAL: jpb.PRIORITY_CRITICAL,
    m.Priority.HIGH: jpb.PRIORITY_HIGH,
    m.Priority.DEFAULT: jpb.PRIORITY_DEFAULT,
    m.Priority.LOW: jpb.PRIORITY_LOW,
}
STATE_TO_PROTO: dict[m.JobState, int] = {
    m.JobState.QUEUED: jpb.JOB_STATE_QUEUED,
    m.JobState.SCHEDULED: jpb.JOB_STATE_SCHEDULED,
    m.JobState.LEASED: jpb.JOB_STATE_LEASED,
    m.JobState.SUCCEEDED: jpb.JOB_STATE_SUCCEEDED,
    m.JobState.DEAD_LETTERED: jpb.JOB_STATE_DEAD_LETTERED,
    m.JobState.CANCELLED: jpb.JOB_STATE_CANCELLED,
    m.JobState.WAITING: jpb.JOB_STATE_WAITING,
}

REASON_TO_PROTO: dict[m.TerminalReason, int] = {
    m.TerminalReason.NONE: jpb.TERMINAL_REASON_UNSPECIFIED,
    m.TerminalReason.SUCCEEDED: jpb.TERMINAL_REASON_SUCCEEDED,
    m.TerminalReason.ATTEMPTS_EXHAUSTED: jpb.TERMINAL_REASON_ATTEMPTS_EXHAUSTED,
    m.TerminalReason.NOT_RETRYABLE: jpb.TERMINAL_REASON_NOT_RETRYABLE,
    m.TerminalReason.CANCELLED: jpb.TERMINAL_REASON_CANCELLED,
    m.TerminalReason.START_DEADLINE_EXCEEDED: jpb.TERMINAL_REASON_START_DEADLINE_EXCEEDED,
    m.TerminalReason.RUN_TIME_EXCEEDED: jpb.TERMINAL_REASON_RUN_TIME_EXCEEDED,
    m.TerminalReason.DEPENDENCY_FAILED: jpb.TERMINAL_REASON_DEPENDENCY_FAILED,
}

# A Duration past this many milliseconds is out of every range we accept;
# clamping here keeps int conversions exact and lets validation name the field.
_MAX_MS = 10 * 365 * 24 * 3600 * 1000


def _ms(d: duration_pb2.Duration) -> int:
    ms = d.seconds * 1000 + d.nanos // 1_000_000
    return max(min(ms, _MAX_MS), -_MAX_MS)


def _ts_ms(t: timestamp_pb2.Timestamp) -> int:
    return t.seconds * 1000 + t.nanos // 1_000_000


def _set_ms(target: timestamp_pb2.Timestamp | duration_pb2.Duration, ms: int) -> None:
    """Set a Timestamp or Duration (in place) to `ms` milliseconds. Unchecked, unlike
    `FromMilliseconds`, whose range check would refuse what a reply must still carry."""
    target.seconds, target.nanos = ms // 1000, (ms % 1000) * 1_000_000


def _ts(ms: int | None) -> timestamp_pb2.Timestamp | None:
    if ms is None:
        return None
    t = timestamp_pb2.Timestamp()
    _set_ms(t, ms)
    return t


def _dur(ms: int) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    _set_ms(d, ms)
    return d


def to_domain_priority(value: int, field: str) -> m.Priority:
    try:
        return PRIORITY_TO_DOMAIN[value]
    except KeyError:
        raise InvalidArgument.field(field, "is not a known priority") from None


def to_domain_retry(p: jpb.RetryPolicy) -> m.RetryPolicy:
    initial = (
        _ms(p.initial_backoff)
        if p.HasField("initial_backoff")
        else DEFAULT_RETRY.initial_backoff_ms
    )
    default_max = max(DEFAULT_RETRY.max_backoff_ms, initial)
    return m.RetryPolicy(
        initial_backoff_ms=initial,
        max_backoff_ms=_ms(p.max_backoff) if p.HasField("max_backoff") else default_max,
        multiplier=p.multiplier if p.HasField("multiplier") else DEFAULT_RETRY.multiplier,
        jitter=p.jitter if p.HasField("jitter") else DEFAULT_RETRY.jitter,
    )


# How each JobSpec field a message has set becomes a domain value: its field
# number -> (the domain field, a conversion or None to take it as it is). Read
# through ListFields, which gives only the fields set (a message field when
# present, a scalar when not zero) in one call: a spec of a batch sets four or
# five of its seventeen, and HasField and attribute reads for every field cost
# about twice as much (a benchmark spec: 5.1-5.5 µs that way, 2.7-3.0 this
# way, timeit).
# Priority is converted after the loop, so that an unknown value can name its
# field. tests/unit/test_convert.py checks that every field is here.
_SPEC_FIELDS: dict[int, tuple[str, Callable[[Any], Any] | None]] = {
    jpb.JobSpec.QUEUE_FIELD_NUMBER: ("queue", None),
    jpb.JobSpec.TYPE_FIELD_NUMBER: ("type", None),
    jpb.JobSpec.PAYLOAD_FIELD_NUMBER: ("payload", None),
    jpb.JobSpec.CONTENT_TYPE_FIELD_NUMBER: ("content_type", None),
    jpb.JobSpec.PRIORITY_FIELD_NUMBER: ("priority", None),
    jpb.JobSpec.METADATA_FIELD_NUMBER: ("metadata", dict),
    jpb.JobSpec.MAX_ATTEMPTS_FIELD_NUMBER: ("max_attempts", None),
    jpb.JobSpec.RETRY_POLICY_FIELD_NUMBER: ("retry_policy", to_domain_retry),
    jpb.JobSpec.LEASE_DURATION_FIELD_NUMBER: ("lease_duration_ms", _ms),
    jpb.JobSpec.RUN_AT_FIELD_NUMBER: ("run_at_ms", _ts_ms),
    jpb.JobSpec.DELAY_FIELD_NUMBER: ("delay_ms", _ms),
    jpb.JobSpec.IDEMPOTENCY_KEY_FIELD_NUMBER: ("idempotency_key", None),
    jpb.JobSpec.CALLBACK_URL_FIELD_NUMBER: ("callback_url", None),
    jpb.JobSpec.START_WITHIN_FIELD_NUMBER: ("start_within_ms", _ms),
    jpb.JobSpec.MAX_RUN_TIME_FIELD_NUMBER: ("max_run_ms", _ms),
    jpb.JobSpec.DEPENDS_ON_FIELD_NUMBER: ("depends_on", list),
    jpb.JobSpec.CONCURRENCY_KEY_FIELD_NUMBER: ("concurrency_key", None),
}
# A spec's required fields and those with a default factory; the others keep
# their defaults unless the message sets them.
_make_spec = m.constructor(m.JobSpec, ("queue", "type", "metadata", "depends_on"))


def to_domain_spec(s: jpb.JobSpec, field: str = "job") -> m.JobSpec:
    values: dict[str, Any] = {"queue": "", "type": "", "metadata": {}, "depends_on": []}
    for fd, value in s.ListFields():
        name, conversion = _SPEC_FIELDS[fd.number]
        values[name] = value if conversion is None else conversion(value)
    if "priority" in values:
        values["priority"] = to_domain_priority(values["priority"], f"{field}.priority")
    return _make_spec(values)


_PRIORITY = jpb.JobSpec.PRIORITY_FIELD_NUMBER
# What an item over defaults sets when it differs from the others only in its
# own fields (`JobSpec.from_defaults`).
_OWN = frozenset({jpb.JobSpec.PAYLOAD_FIELD_NUMBER, jpb.JobSpec.IDEMPOTENCY_KEY_FIELD_NUMBER})
# The oneof `start`: a job that sets either field takes neither from defaults.
_START = frozenset({jpb.JobSpec.RUN_AT_FIELD_NUMBER, jpb.JobSpec.DELAY_FIELD_NUMBER})


def _over(base: m.JobSpec, fields: Any, field: str) -> m.JobSpec:
    """A copy of `base` (a batch's defaults) with a message's set fields
    (`ListFields`) over it. Made as `models.evolve` makes a job: a benchmark
    item that sets only its payload takes about 0.9 µs, against 1.6 for the
    same item converted in full (timeit: see docs/performance.md)."""
    new = object.__new__(m.JobSpec)
    attrs = new.__dict__
    attrs.update(base.__dict__)
    # Every spec owns its metadata dict and dependency list.
    attrs["metadata"] = dict(base.metadata)
    attrs["depends_on"] = [*base.depends_on]
    own_only = bool(base.queue and base.type)  # sets nothing but its payload and key
    for fd, value in fields:
        number = fd.number
        name, conversion = _SPEC_FIELDS[number]
        if number not in _OWN:
            own_only = False
        if number in _START:
            attrs["run_at_ms"] = attrs["delay_ms"] = None
        if number == _PRIORITY:
            value = to_domain_priority(value, f"{field}.priority")
        attrs[name] = value if conversion is None else conversion(value)
    attrs["from_defaults"] = own_only
    return new


def to_domain_specs(
    specs: Sequence[jpb.JobSpec], defaults: m.JobSpec | None = None
) -> list[m.JobSpec | InvalidArgument]:
    """Convert batch items, each over `defaults` when given (a call's
    EnqueueBatchRequest.defaults, converted: a field an item sets replaces
    the default's); an item that cannot even be converted fails on its own."""
    out: list[m.JobSpec | InvalidArgument] = []
    for i, s in enumerate(specs):
        try:
            if defaults is None:
                out.append(to_domain_spec(s, f"jobs[{i}]"))
            else:
                out.append(_over(defaults, s.ListFields(), f"jobs[{i}]"))
        except InvalidArgument as exc:
            out.append(exc)
    return out


def to_proto_retry(p: m.RetryPolicy) -> jpb.RetryPolicy:
    return jpb.RetryPolicy(
        initial_backoff=_dur(p.initial_backoff_ms),
        max_backoff=_dur(p.max_backoff_ms),
        multiplier=p.multiplier,
        jitter=p.jitter,
    )


@functools.lru_cache(maxsize=256)
def _shared_retry(p: m.RetryPolicy) -> jpb.RetryPolicy:
    """Jobs share a handful of retry policies: build each message once. Never
    mutated: a message given to a constructor is copied into the new one."""
    return to_proto_retry(p)


def to_proto_job(j: m.Job) -> jpb.Job:
    msg = jpb.Job(
        id=j.id,
        namespace=j.namespace,
        queue=j.queue,
        type=j.type,
        payload=j.payload,
        content_type=j.content_type,
        priority=PRIORITY_TO_PROTO[j.priority],  # type: ignore[arg-type]
        state=STATE_TO_PROTO[j.state],  # type: ignore[arg-type]
        attempt=j.attempt,
        max_attempts=j.max_attempts,
        retry_policy=_shared_retry(j.retry_policy),
        lease_duration=_dur(j.lease_duration_ms),
        progress=jpb.Progress(percent=j.progress_percent, message=j.progress_message),
        create_time=_ts(j.created_ms),
        start_time=_ts(j.started_ms),
        finish_time=_ts(j.finished_ms),
        next_run_time=_ts(j.next_run_ms),
        last_error=j.last_error,
        result=j.result,
        result_content_type=j.result_content_type,
        lease_holder=j.lease_holder if j.state is m.JobState.LEASED else "",
        version=j.version,
        idempotency_key=j.idempotency_key or "",
        callback_url=j.callback_url,
        cancel_requested=j.cancel_requested,
        terminal_reason=REASON_TO_PROTO[j.terminal_reason],  # type: ignore[arg-type]
        start_deadline_time=_ts(j.start_deadline_ms),
        max_run_time=_dur(j.max_run_ms) if j.max_run_ms is not None else None,
        wait_reason=j.wait_reason,
        concurrency_key=j.concurrency_key,
    )
    # Filled only when non-empty: a map field given even an empty dict goes
    # through MutableMapping.update, which costs more than several fields.
    if j.metadata:
        msg.metadata.update(j.metadata)
    if j.trace_context:
        msg.trace_context.update(j.trace_context)
    if j.depends_on:
        msg.depends_on.extend(j.depends_on)
    return msg


# The Job fields `to_proto_job` reads, but for those `JobMessages` sets per job:
# id, payload, idempotency_key, and the times that differ between jobs enqueued
# one by one (created_ms, run_at_ms, start_deadline_ms; whether a start deadline
# is set is part of the shape, since it decides whether the field is present).
_SHAPE = operator.attrgetter(
    *(
        "namespace queue type content_type priority state attempt max_attempts"
        " retry_policy lease_duration_ms progress_percent progress_message"
        " started_ms finished_ms last_error result result_content_type"
        " lease_holder version callback_url cancel_requested terminal_reason"
        " max_run_ms wait_reason concurrency_key metadata trace_context depends_on"
    ).split()
)


def basic_view(view: int) -> bool:
    """Whether an Enqueue or EnqueueBatch reply is to carry the BASIC view of its
    jobs (`JobView`); INVALID_ARGUMENT for an unknown value, before anything is
    enqueued."""
    if view == pb.JOB_VIEW_BASIC:
        return True
    if view in (pb.JOB_VIEW_UNSPECIFIED, pb.JOB_VIEW_FULL):
        return False
    raise InvalidArgument.field("view", "is not a known view")


def fill_basic(target: jpb.Job, j: m.Job) -> None:
    """Set the BASIC view's fields of `target` (`JobView`): what the server decided
    and a producer needs to follow the job, and no payload sent back. Measured
    with timeit on a reply of 100 benchmark jobs: 129 µs to build in this view
    (`JobMessages`) against 315 in full, 8,800 bytes against 17,890."""
    target.id = j.id
    target.namespace = j.namespace
    target.queue = j.queue
    target.type = j.type
    target.state = STATE_TO_PROTO[j.state]  # type: ignore[assignment]
    target.version = j.version
    _set_ms(target.create_time, j.created_ms)
    next_run = j.next_run_ms
    if next_run is not None:
        _set_ms(target.next_run_time, next_run)


class JobMessages:
    """Fills the Job messages of one reply, each as `to_proto_job` would.

    The jobs of one reply mostly differ only in id, payload, idempotency key
    and the moments they were made for (one producer's batch, one queue's
    lease): such a job's message is a copy of the previous one, built in
    full, with those fields set. A copy costs 0.8 µs where building one
    costs 8.6 (2-core machine, upb). A Lease of jobs enqueued one call each,
    as most are, has a different creation time per job: with the times in
    the shape, every message of such a reply was built in full.
    """

    def __init__(self, basic: bool = False) -> None:
        self._basic = basic  # the BASIC view (`fill_basic`) instead of every field
        self._shape: tuple[object, ...] | None = None
        self._template: jpb.Job | None = None

    def fill(self, target: jpb.Job, j: m.Job) -> None:
        if self._basic:
            self._fill_basic(target, j)
            return
        if not self._copied_previous(target, (*_SHAPE(j), j.start_deadline_ms is None)):
            target.CopyFrom(to_proto_job(j))
            return
        target.id = j.id
        target.payload = j.payload
        target.idempotency_key = j.idempotency_key or ""
        _set_ms(target.create_time, j.created_ms)
        next_run = j.next_run_ms
        if next_run is not None:
            _set_ms(target.next_run_time, next_run)
        if j.start_deadline_ms is not None:
            _set_ms(target.start_deadline_time, j.start_deadline_ms)

    def _fill_basic(self, target: jpb.Job, j: m.Job) -> None:
        """`fill_basic`, copying the previous job's message when only the id
        differs, as it does between the jobs of one call (made at the same
        moment): 0.8 µs a job instead of 2.0 (timeit, 100 jobs), the times'
        sub-messages being the dearest part to set."""
        shape = (j.namespace, j.queue, j.type, j.state, j.version, j.created_ms, j.next_run_ms)
        if not self._copied_previous(target, shape):
            fill_basic(target, j)
            return
        target.id = j.id

    def _copied_previous(self, target: jpb.Job, shape: tuple[object, ...]) -> bool:
        """Copy the previous message into `target` if its job had the same
        `shape`, and say so; else `target`, which the caller then builds in
        full, becomes the message the next jobs are compared with."""
        if self._template is not None and shape == self._shape:
            target.CopyFrom(self._template)
            return True
        self._shape, self._template = shape, target
        return False


def to_proto_error(exc: DispatchError) -> jpb.ItemError:
    return jpb.ItemError(code=code_of(exc).value[0], reason=exc.reason, message=exc.message)


# ---- per RPC ------------------------------------------------------------


def to_proto_enqueue(r: m.Enqueued, basic: bool = False) -> pb.EnqueueResponse:
    if not basic:
        return pb.EnqueueResponse(job=to_proto_job(r.job), created=r.created)
    out = pb.EnqueueResponse(created=r.created)
    fill_basic(out.job, r.job)
    return out


def to_proto_enqueue_batch(
    results: Sequence[m.Enqueued | DispatchError], basic: bool = False
) -> pb.EnqueueBatchResponse:
    out = pb.EnqueueBatchResponse()
    jobs = JobMessages(basic)
    for r in results:
        if isinstance(r, DispatchError):
            out.results.add(error=to_proto_error(r))
        else:
            jobs.fill(out.results.add(created=r.created).job, r.job)
    return out


class PreparedBatchReply:
    """An EnqueueBatch reply built while the jobs' insert runs.

    `prepare` gets the new jobs before their commit (`Dispatcher.enqueue_batch`'s
    `while_inserting`) and fills their messages then, instead of after the
    commit. `reply` uses them when every item was answered with exactly the job
    prepared (the common case: no item refused, no key found taken); otherwise
    it builds the reply from the answers, as `to_proto_enqueue_batch` does.
    """

    def __init__(self, basic: bool = False) -> None:
        self._basic = basic  # the BASIC view of each job (`fill_basic`)
        self._jobs: list[m.Job] = []
        self._out: pb.EnqueueBatchResponse | None = None

    def prepare(self, jobs: list[m.Job]) -> None:
        out = pb.EnqueueBatchResponse()
        messages = JobMessages(self._basic)
        for j in jobs:
            messages.fill(out.results.add(created=True).job, j)
        self._jobs, self._out = jobs, out

    def reply(self, results: Sequence[m.Enqueued | DispatchError]) -> pb.EnqueueBatchResponse:
        out, jobs = self._out, self._jobs
        if (
            out is None
            or len(results) != len(jobs)
            or not all(
                isinstance(r, m.Enqueued) and r.created and r.job is j
                for r, j in zip(results, jobs, strict=True)
            )
        ):
            return to_proto_enqueue_batch(results, self._basic)
        return out


def to_proto_status(job: m.Job) -> pb.GetStatusResponse:
    return pb.GetStatusResponse(job=to_proto_job(job))


def to_domain_lease(r: pb.LeaseRequest, time_remaining_s: float | None) -> m.LeaseRequest:
    wait_ms = _ms(r.wait)
    if time_remaining_s is not None:
        # Answer before the caller's deadline, with a margin for the trip back.
        margin_ms = min(500, int(time_remaining_s * 100))
        wait_ms = min(wait_ms, int(time_remaining_s * 1000) - margin_ms)
    return m.LeaseRequest(
        namespace=r.namespace,
        worker_id=r.worker_id,
        queues=list(r.queues),
        max_jobs=r.max_jobs,
        wait_ms=wait_ms,
        lease_duration_ms=_ms(r.lease_duration) if r.HasField("lease_duration") else None,
    )


def to_proto_leases(leases: Sequence[m.GrantedLease]) -> pb.LeaseResponse:
    out = pb.LeaseResponse()
    jobs = JobMessages()
    for g in leases:
        lease = out.leases.add(lease_token=g.token, expire_time=_ts(g.expire_ms))
        jobs.fill(lease.job, g.job)
    return out


def to_domain_heartbeats(r: pb.HeartbeatRequest) -> list[m.HeartbeatItem]:
    return [
        m.HeartbeatItem(
            token=i.lease_token,
            progress_percent=i.progress.percent if i.HasField("progress") else None,
            progress_message=i.progress.message if i.HasField("progress") else None,
            lease_duration_ms=_ms(i.lease_duration) if i.HasField("lease_duration") else None,
        )
        for i in r.items
    ]


def to_proto_heartbeat(
    items: Sequence[m.HeartbeatItem], results: Sequence[m.Extended | DispatchError]
) -> pb.HeartbeatResponse:
    out = pb.HeartbeatResponse()
    for item, r in zip(items, results, strict=True):
        if isinstance(r, DispatchError):
            out.results.add(lease_token=item.token, error=to_proto_error(r))
        else:
            out.results.add(
                lease_token=item.token,
                expire_time=_ts(r.expire_ms),
                cancel_requested=r.cancel_requested,
            )
    return out


def to_domain_acks(r: pb.AckRequest) -> list[m.AckItem]:
    return [m.AckItem(i.lease_token, i.result, i.result_content_type) for i in r.items]


def to_proto_ack(
    items: Sequence[m.AckItem], results: Sequence[m.Settled | DispatchError]
) -> pb.AckResponse:
    out = pb.AckResponse()
    for item, r in zip(items, results, strict=True):
        if isinstance(r, DispatchError):
            out.results.add(lease_token=item.token, error=to_proto_error(r))
        else:
            out.results.add(lease_token=item.token)
    return out


def to_domain_nacks(r: pb.NackRequest) -> list[m.NackItem]:
    return [
        m.NackItem(
            token=i.lease_token,
            error=i.error,
            retry=i.retry,
            retry_after_ms=_ms(i.retry_after) if i.HasField("retry_after") else None,
            release=i.release,
        )
        for i in r.items
    ]


def to_proto_nack(
    items: Sequence[m.NackItem], results: Sequence[m.Settled | DispatchError]
) -> pb.NackResponse:
    out = pb.NackResponse()
    for item, r in zip(items, results, strict=True):
        if isinstance(r, DispatchError):
            out.results.add(lease_token=item.token, error=to_proto_error(r))
        else:
            out.results.add(
                lease_token=item.token,
                state=STATE_TO_PROTO[r.state],
                next_run_time=_ts(r.next_run_ms),
            )
    return out


def to_domain_stream(r: pb.StreamUpdatesRequest) -> m.StreamRequest:
    return m.StreamRequest(namespace=r.namespace, job_ids=list(r.job_ids), queue=r.queue)


def to_proto_update(u: m.JobUpdate) -> pb.StreamUpdatesResponse:
    return pb.StreamUpdatesResponse(
        job_id=u.job_id,
        queue=u.queue,
        version=u.version,
        state=STATE_TO_PROTO[u.state],  # type: ignore[arg-type]
        attempt=u.attempt,
        time=_ts(u.at_ms),
        error=u.error,
        job=to_proto_job(u.job) if u.job is not None else None,
    )


# ---- admin --------------------------------------------------------------

STATE_TO_DOMAIN: dict[int, m.JobState] = {v: k for k, v in STATE_TO_PROTO.items()}


def to_domain_state(value: int, field: str) -> m.JobState | None:
    """None for unspecified (all states); InvalidArgument for an unknown number."""
    if value == jpb.JOB_STATE_UNSPECIFIED:
        return None
    try:
        return STATE_TO_DOMAIN[value]
    except KeyError:
        raise InvalidArgument.field(field, "is not a known state") from None


def to_domain_states(values: Sequence[int]) -> list[m.JobState]:
    out = []
    for i, v in enumerate(values):
        state = to_domain_state(v, f"states[{i}]")
        if state is None:
            raise InvalidArgument.field(f"states[{i}]", "must name a state")
        out.append(state)
    return out


def to_proto_queues(page: m.Page) -> apb.ListQueuesResponse:
    return apb.ListQueuesResponse(
        queues=[
            apb.QueueStats(
                namespace=q.namespace,
                name=q.name,
                priorities=[
                    apb.PriorityStats(
                        priority=PRIORITY_TO_PROTO[p.priority],  # type: ignore[arg-type]
                        queued=p.queued,
                        scheduled=p.scheduled,
                        leased=p.leased,
                        dead_lettered=p.dead_lettered,
                        oldest_queued_age=_dur(p.oldest_queued_age_ms),
                    )
                    for p in q.priorities
                ],
                succeeded_last_minute=q.succeeded_last_minute,
                dead_lettered_last_minute=q.dead_lettered_last_minute,
                paused=q.paused,
                max_depth=q.max_depth,
                **_limits_to_proto(q.settings),  # type: ignore[arg-type]
            )
            for q in page.items
        ],
        next_page_token=page.next_token,
    )


def to_proto_job_summary(j: m.Job) -> jpb.Job:
    out = to_proto_job(j)
    out.ClearField("payload")
    out.ClearField("result")
    return out


def to_proto_jobs(page: m.Page) -> apb.ListJobsResponse:
    return apb.ListJobsResponse(
        jobs=[to_proto_job_summary(j) for j in page.items], next_page_token=page.next_token
    )


def to_proto_workers(workers: Sequence[m.WorkerInfo]) -> apb.ListWorkersResponse:
    return apb.ListWorkersResponse(
        workers=[
            apb.WorkerInfo(
                worker_id=w.worker_id,
                last_seen_time=_ts(w.last_seen_ms) if w.last_seen_ms else None,
                leases_held=w.leases_held,
            )
            for w in workers
        ]
    )


def to_proto_cancel(job: m.Job) -> pb.CancelResponse:
    return pb.CancelResponse(job=to_proto_job(job))


# Proto field of SetQueueLimitsRequest / QueueStats -> QueueSettings attribute.
LIMIT_FIELDS = {
    "max_depth": "max_depth",
    "max_concurrency": "max_concurrency",
    "rate_per_second": "rate_per_s",
    "burst": "burst",
    "key_max_concurrency": "key_max_concurrency",
    "key_rate_per_second": "key_rate_per_s",
    "key_burst": "key_burst",
}


def to_domain_limits(r: apb.SetQueueLimitsRequest) -> dict[str, float]:
    """Only the fields the caller set."""
    return {attr: getattr(r, f) for f, attr in LIMIT_FIELDS.items() if r.HasField(f)}  # type: ignore[arg-type]


def _limits_to_proto(s: m.QueueSettings | None) -> dict[str, float]:
    if s is None:
        return {}
    return {f: getattr(s, attr) for f, attr in LIMIT_FIELDS.items() if f != "max_depth"}


QUOTA_FIELDS = {
    "enqueue_rate_per_second": "enqueue_rate_per_s",
    "enqueue_burst": "enqueue_burst",
    "max_live_jobs": "max_live_jobs",
    "max_leases": "max_leases",
}


def to_domain_quotas(r: apb.SetNamespaceQuotasRequest) -> dict[str, float]:
    """Only the fields the caller set."""
    return {attr: getattr(r, f) for f, attr in QUOTA_FIELDS.items() if r.HasField(f)}  # type: ignore[arg-type]
