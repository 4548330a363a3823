"""The SDK's data types: plain dataclasses and enums, never generated protobuf classes
(`Enqueued` holds one until its job is read)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

JSON = "application/json"


class Priority(Enum):
    """Priority levels; a higher one is always leased first, FIFO within a level."""

    CRITICAL = "critical"
    HIGH = "high"
    DEFAULT = "default"
    LOW = "low"


class JobState(Enum):
    """Where a job is in its life (docs/architecture.md draws the state machine)."""

    WAITING = "waiting"  # on its dependencies
    SCHEDULED = "scheduled"  # until run_at or a retry backoff
    QUEUED = "queued"
    LEASED = "leased"
    SUCCEEDED = "succeeded"
    DEAD_LETTERED = "dead_lettered"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """True for the states a job never leaves."""
        return self in (JobState.SUCCEEDED, JobState.DEAD_LETTERED, JobState.CANCELLED)


class TerminalReason(Enum):
    """Why a job ended."""

    NONE = "none"
    SUCCEEDED = "succeeded"
    ATTEMPTS_EXHAUSTED = "attempts_exhausted"
    NOT_RETRYABLE = "not_retryable"
    CANCELLED = "cancelled"
    START_DEADLINE_EXCEEDED = "start_deadline_exceeded"
    RUN_TIME_EXCEEDED = "run_time_exceeded"
    DEPENDENCY_FAILED = "dependency_failed"


class JobView(Enum):
    """How much of each job an enqueue's reply carries (the API's `JobView`)."""

    FULL = "full"
    """Every field, as `Client.get` returns it."""
    BASIC = "basic"
    """What the server decided: id, namespace, queue, type, state, version,
    created_at and next_run_at. Every other field is at its zero value: the
    payload is not sent back (b""), nor the metadata ({}). For producers that
    need only the ids: a smaller reply, cheaper for the server and the SDK."""


@dataclass(frozen=True)
class Backoff:
    """How long a failed job waits before its next attempt: exponential, capped, jittered.

    None leaves the server's default for that field.
    """

    initial: timedelta | None = None
    maximum: timedelta | None = None
    multiplier: float | None = None
    jitter: float | None = None  # 0.0 to 1.0: +/- that fraction of the delay


@dataclass(frozen=True)
class Progress:
    """What a running job reported about itself."""

    percent: float = 0.0
    message: str = ""


@dataclass(frozen=True)
class JobOptions:
    """Everything about a job except its queue, type and payload. All optional.

    Set either `run_at` or `delay`, not both.
    """

    priority: Priority = Priority.DEFAULT
    metadata: Mapping[str, str] = field(default_factory=dict)
    max_attempts: int | None = None  # None: the server's default
    backoff: Backoff | None = None
    lease_duration: timedelta | None = None
    run_at: datetime | None = None  # timezone-aware
    delay: timedelta | None = None
    idempotency_key: str | None = None  # None: the client makes one, so retries are safe
    callback_url: str = ""
    start_within: timedelta | None = None
    max_run_time: timedelta | None = None
    depends_on: tuple[str, ...] = ()
    concurrency_key: str = ""
    content_type: str | None = None  # None: JSON for objects, none for bytes


@dataclass(frozen=True)
class JobRequest:
    """One job to enqueue: where, what, the payload, and its options."""

    queue: str
    type: str
    payload: Any = b""  # bytes as they are; anything else is encoded as JSON
    options: JobOptions = field(default_factory=JobOptions)


@dataclass(frozen=True)
class Job:
    """A job as the dispatcher knows it."""

    id: str
    namespace: str
    queue: str
    type: str
    state: JobState
    payload: bytes
    content_type: str
    priority: Priority
    metadata: Mapping[str, str]
    attempt: int
    max_attempts: int
    progress: Progress
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    next_run_at: datetime | None
    last_error: str
    result: bytes
    result_content_type: str
    lease_holder: str
    version: int
    idempotency_key: str
    trace_context: Mapping[str, str]
    cancel_requested: bool
    terminal_reason: TerminalReason
    wait_reason: str
    depends_on: tuple[str, ...]
    concurrency_key: str
    lease_duration: timedelta | None

    def json(self) -> Any:
        """The payload decoded from JSON."""
        return json.loads(self.payload) if self.payload else None

    def result_json(self) -> Any:
        """The result decoded from JSON."""
        return json.loads(self.result) if self.result else None


class Enqueued:
    """What an enqueue did: the job, and whether this call created it (False: an
    earlier job with the same idempotency key). Read-only.

    From `Client.enqueue_many`, the job is converted from the reply when `job`
    is first read: a producer that only checks for errors, or reads a few ids,
    does not pay for converting every job (about 12 µs each, a third of the
    SDK's CPU per job in a batch of 100).
    """

    __slots__ = ("_job", "_load", "created")
    _job: Job | None
    _load: Callable[[], Job] | None
    created: bool

    def __init__(self, job: Job, created: bool) -> None:
        _setattr(self, "_job", job)
        _setattr(self, "_load", None)
        _setattr(self, "created", created)

    @classmethod
    def converted_on_read(cls, load: Callable[[], Job], created: bool) -> Enqueued:
        """An Enqueued whose job `load()` makes, once, when first read."""
        e = cls.__new__(cls)
        _setattr(e, "_job", None)
        _setattr(e, "_load", load)
        _setattr(e, "created", created)
        return e

    @property
    def job(self) -> Job:
        job = self._job
        if job is None:
            assert self._load is not None  # one of the two is always set
            job = self._load()
            _setattr(self, "_job", job)
            _setattr(self, "_load", None)
        return job

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Enqueued is read-only: cannot set {name}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Enqueued):
            return NotImplemented
        return (self.job, self.created) == (other.job, other.created)

    def __hash__(self) -> int:
        return hash((self.job, self.created))

    def __repr__(self) -> str:
        return f"Enqueued(job={self.job!r}, created={self.created!r})"


# Enqueued refuses setattr, so its slots are set past it. One call per slot, not
# a loop over keyword arguments: a batch's 100 results took 165-166 µs to make,
# 122-124 this way (`_enqueue_result`, timeit, 2-core machine).
_setattr = object.__setattr__


@dataclass(frozen=True)
class JobUpdate:
    """One transition of a followed job (`Client.updates`)."""

    job_id: str
    queue: str
    version: int
    state: JobState
    attempt: int
    time: datetime | None
    error: str
    job: Job | None  # the full job, sent with the first update and with terminal ones


def encode_payload(payload: Any, content_type: str | None) -> tuple[bytes, str]:
    """Bytes pass through; anything else becomes compact JSON."""
    if isinstance(payload, bytes | bytearray | memoryview):
        return bytes(payload), content_type or ""
    return json.dumps(payload, separators=(",", ":")).encode(), content_type or JSON
