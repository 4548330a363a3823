"""Every conversion between the SDK's types and the generated protobuf classes."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from worker_sdk._proto.dispatch.v1 import dispatcher_pb2 as pb
from worker_sdk._proto.dispatch.v1 import job_pb2 as jpb
from worker_sdk.types import (
    Backoff,
    Enqueued,
    Job,
    JobOptions,
    JobRequest,
    JobState,
    JobUpdate,
    JobView,
    Priority,
    Progress,
    TerminalReason,
    encode_payload,
)

PRIORITY_TO_PROTO: Mapping[Priority, jpb.Priority.ValueType] = {
    Priority.CRITICAL: jpb.PRIORITY_CRITICAL,
    Priority.HIGH: jpb.PRIORITY_HIGH,
    Priority.DEFAULT: jpb.PRIORITY_DEFAULT,
    Priority.LOW: jpb.PRIORITY_LOW,
}
PRIORITY_FROM_PROTO = {v: k for k, v in PRIORITY_TO_PROTO.items()} | {
    jpb.PRIORITY_UNSPECIFIED: Priority.DEFAULT
}

STATE_TO_PROTO: Mapping[JobState, jpb.JobState.ValueType] = {
    JobState.WAITING: jpb.JOB_STATE_WAITING,
    JobState.SCHEDULED: jpb.JOB_STATE_SCHEDULED,
    JobState.QUEUED: jpb.JOB_STATE_QUEUED,
    JobState.LEASED: jpb.JOB_STATE_LEASED,
    JobState.SUCCEEDED: jpb.JOB_STATE_SUCCEEDED,
    JobState.DEAD_LETTERED: jpb.JOB_STATE_DEAD_LETTERED,
    JobState.CANCELLED: jpb.JOB_STATE_CANCELLED,
}
STATE_FROM_PROTO = {v: k for k, v in STATE_TO_PROTO.items()}

REASON_TO_PROTO: Mapping[TerminalReason, jpb.TerminalReason.ValueType] = {
    TerminalReason.NONE: jpb.TERMINAL_REASON_UNSPECIFIED,
    TerminalReason.SUCCEEDED: jpb.TERMINAL_REASON_SUCCEEDED,
    TerminalReason.ATTEMPTS_EXHAUSTED: jpb.TERMINAL_REASON_ATTEMPTS_EXHAUSTED,
    TerminalReason.NOT_RETRYABLE: jpb.TERMINAL_REASON_NOT_RETRYABLE,
    TerminalReason.CANCELLED: jpb.TERMINAL_REASON_CANCELLED,
    TerminalReason.START_DEADLINE_EXCEEDED: jpb.TERMINAL_REASON_START_DEADLINE_EXCEEDED,
    TerminalReason.RUN_TIME_EXCEEDED: jpb.TERMINAL_REASON_RUN_TIME_EXCEEDED,
    TerminalReason.DEPENDENCY_FAILED: jpb.TERMINAL_REASON_DEPENDENCY_FAILED,
}
REASON_FROM_PROTO = {v: k for k, v in REASON_TO_PROTO.items()}
# FULL is the server's default: sent as unspecified, as before JobView existed.
VIEW_TO_PROTO: Mapping[JobView, pb.JobView.ValueType] = {
    JobView.FULL: pb.JOB_VIEW_UNSPECIFIED,
    JobView.BASIC: pb.JOB_VIEW_BASIC,
}


def duration(d: timedelta) -> Duration:
    out = Duration()
    out.FromTimedelta(d)
    return out


def timestamp(t: datetime) -> Timestamp:
    if t.tzinfo is None:
        raise ValueError("run_at must be timezone-aware (a naive datetime is ambiguous)")
    out = Timestamp()
    out.FromDatetime(t)
    return out


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NO_PROGRESS = Progress()


def from_timestamp(t: Timestamp, present: bool) -> datetime | None:
    # What Timestamp.ToDatetime(tzinfo=UTC) computes, at half its cost.
    return _EPOCH + timedelta(seconds=t.seconds, microseconds=t.nanos // 1000) if present else None


def job_spec(r: JobRequest, idempotency_key: str) -> jpb.JobSpec:
    """The proto JobSpec of a request, with the idempotency key chosen by the client."""
    o = r.options
    payload, content_type = encode_payload(r.payload, o.content_type)
    spec = jpb.JobSpec(
        queue=r.queue,
        type=r.type,
        payload=payload,
        content_type=content_type,
        priority=PRIORITY_TO_PROTO[o.priority],
        metadata=dict(o.metadata),
        max_attempts=o.max_attempts or 0,
        idempotency_key=idempotency_key,
        callback_url=o.callback_url,
        depends_on=list(o.depends_on),
        concurrency_key=o.concurrency_key,
    )
    if o.backoff is not None:
        _apply_backoff(o.backoff, spec.retry_policy)
    if o.lease_duration is not None:
        spec.lease_duration.CopyFrom(duration(o.lease_duration))
    if o.run_at is not None and o.delay is not None:
        raise ValueError("set run_at or delay, not both")
    if o.run_at is not None:
        spec.run_at.CopyFrom(timestamp(o.run_at))
    if o.delay is not None:
        spec.delay.CopyFrom(duration(o.delay))
    if o.start_within is not None:
        spec.start_within.CopyFrom(duration(o.start_within))
    if o.max_run_time is not None:
        spec.max_run_time.CopyFrom(duration(o.max_run_time))
    return spec


class JobSpecs:
    """Adds the jobs of one EnqueueBatch request, each as `job_spec` would
    make it, and counts the request's encoded size (`size`), which the client
    keeps under `MAX_BATCH_BYTES`.

    The requests of one batch mostly share their shape (one options object,
    one queue and type) and differ only in payload and key. While every job so
    far shares the first one's shape, that shape goes once, as the request's
    `defaults`, and each job carries only its payload and key: the request of
    100 benchmark jobs takes about a fifth of the time to make and half the
    bytes (timeit: see docs/performance.md), and the server converts each job
    over the defaults. A job of another shape ends that: the jobs so far get
    the shape written into them, the defaults are cleared, and from then on
    each job is made in full, as a copy of the one before it when they share
    a shape (0.8 µs a spec, against 3.0 to build one and about 0.9 more to
    copy it into the batch, in-process on a 2-core machine).
    """

    def __init__(self, batch: pb.EnqueueBatchRequest) -> None:
        self._batch = batch
        self._shared = True  # every job so far is its payload and key over the defaults
        self._shape: tuple[object, ...] | None = None
        self._template: jpb.JobSpec | None = None
        self._options: JobOptions | None = None  # keeps the id in `_shape` from being reused
        self._rest = 0  # the template's encoded size but for its payload and key
        self.size = 0  # the jobs' and the defaults' encoded sizes, summed

    def add(self, r: JobRequest, idempotency_key: str) -> None:
        """Add a job for `r` to the batch."""
        payload, content_type = encode_payload(r.payload, r.options.content_type)
        # The options by identity: one object, one set of values (it is frozen).
        shape = (id(r.options), r.queue, r.type, content_type)
        if self._shared:
            if self._template is None:
                self._template = self._batch.defaults
                self._template.CopyFrom(job_spec(r, ""))
                self._template.ClearField("payload")
                self._shape, self._options = shape, r.options
                self.size = self._template.ByteSize()
            if shape == self._shape:
                self._batch.jobs.add(payload=payload, idempotency_key=idempotency_key)
                self.size += _bytes_field_size(payload) + _key_size(idempotency_key)
                return
            self._write_shape_into_jobs()
        target = self._batch.jobs.add()
        if self._template is None or shape != self._shape:
            target.CopyFrom(job_spec(r, idempotency_key))
            self._shape, self._template, self._options = shape, target, r.options
            size = target.ByteSize()
            self._rest = size - _bytes_field_size(target.payload) - _key_size(idempotency_key)
            self.size += size
            return
        target.CopyFrom(self._template)
        target.payload = payload
        target.idempotency_key = idempotency_key
        self.size += self._rest + _bytes_field_size(payload) + _key_size(idempotency_key)

    def _write_shape_into_jobs(self) -> None:
        """Leave the defaults: each job so far becomes the defaults with its own
        payload and key, as it would have been made in full."""
        defaults = self._batch.defaults
        for job in self._batch.jobs:
            job.CopyFrom(over_defaults(defaults, job))
        self._batch.ClearField("defaults")
        self._shared, self._template = False, None
        self.size = sum(job.ByteSize() for job in self._batch.jobs)


def over_defaults(defaults: jpb.JobSpec, job: jpb.JobSpec) -> jpb.JobSpec:
    """The job an EnqueueBatch makes of `job` over its `defaults`, as one spec,
    for a job that sets only its payload and key (as `JobSpecs` adds it): those
    replace the defaults'. (MergeFrom would merge a map or a message the job
    set, and append a list, where the server replaces the default's whole.)"""
    merged = jpb.JobSpec()
    merged.CopyFrom(defaults)
    merged.MergeFrom(job)
    return merged


def _key_size(key: str) -> int:
    """The encoded size of an idempotency key: most are empty, and cost nothing to count."""
    return _bytes_field_size(key.encode()) if key else 0


def _bytes_field_size(value: bytes) -> int:
    """The encoded size of a set proto3 `bytes` or `string` field numbered below
    16 (JobSpec's payload and idempotency key): a one-byte tag, the length as a
    varint, the bytes; nothing when empty (not encoded)."""
    n = len(value)
    if not n:
        return 0
    return 1 + (n.bit_length() + 6) // 7 + n


def _apply_backoff(b: Backoff, out: jpb.RetryPolicy) -> None:
    if b.initial is not None:
        out.initial_backoff.CopyFrom(duration(b.initial))
    if b.maximum is not None:
        out.max_backoff.CopyFrom(duration(b.maximum))
    if b.multiplier is not None:
        out.multiplier = b.multiplier
    if b.jitter is not None:
        out.jitter = b.jitter


def job(j: jpb.Job) -> Job:
    """The SDK's Job of a proto Job.

    Built for the worker's hot path (every leased job passes here): empty maps
    and a zero progress, by far the most common, cost no conversion, and the
    frozen dataclass is filled in one step instead of through its __init__ (one
    object.__setattr__ per field, 29 of them); a unit test checks that every
    field of Job is set, and nothing else.
    """
    progress = j.progress
    has = j.HasField
    fields = {
        "id": j.id,
        "namespace": j.namespace,
        "queue": j.queue,
        "type": j.type,
        "state": STATE_FROM_PROTO.get(j.state, JobState.QUEUED),
        "payload": j.payload,
        "content_type": j.content_type,
        "priority": PRIORITY_FROM_PROTO.get(j.priority, Priority.DEFAULT),
        "metadata": dict(j.metadata) if j.metadata else {},
        "attempt": j.attempt,
        "max_attempts": j.max_attempts,
        "progress": Progress(progress.percent, progress.message)
        if progress.percent or progress.message
        else _NO_PROGRESS,
        "created_at": from_timestamp(j.create_time, True) if has("create_time") else None,
        "started_at": from_timestamp(j.start_time, True) if has("start_time") else None,
        "finished_at": from_timestamp(j.finish_time, True) if has("finish_time") else None,
        "next_run_at": from_timestamp(j.next_run_time, True) if has("next_run_time") else None,
        "last_error": j.last_error,
        "result": j.result,
        "result_content_type": j.result_content_type,
        "lease_holder": j.lease_holder,
        "version": j.version,
        "idempotency_key": j.idempotency_key,
        "trace_context": dict(j.trace_context) if j.trace_context else {},
        "cancel_requested": j.cancel_requested,
        "terminal_reason": REASON_FROM_PROTO.get(j.terminal_reason, TerminalReason.NONE),
        "wait_reason": j.wait_reason,
        "depends_on": tuple(j.depends_on),
        "concurrency_key": j.concurrency_key,
        "lease_duration": _lease_duration(j.lease_duration) if has("lease_duration") else None,
    }
    out = object.__new__(Job)
    out.__dict__.update(fields)
    return out


@functools.lru_cache(maxsize=64)
def _lease_duration_of(seconds: int, nanos: int) -> timedelta:
    """Jobs share a handful of lease durations: make each timedelta once (immutable)."""
    return timedelta(seconds=seconds, microseconds=nanos // 1000)


def _lease_duration(d: Duration) -> timedelta:
    return _lease_duration_of(d.seconds, d.nanos)


def enqueued(j: jpb.Job, created: bool) -> Enqueued:
    return Enqueued(job(j), created)


def update(u: pb.StreamUpdatesResponse) -> JobUpdate:
    return JobUpdate(
        job_id=u.job_id,
        queue=u.queue,
        version=u.version,
        state=STATE_FROM_PROTO.get(u.state, JobState.QUEUED),
        attempt=u.attempt,
        time=from_timestamp(u.time, u.HasField("time")),
        error=u.error,
        job=job(u.job) if u.HasField("job") else None,
    )
