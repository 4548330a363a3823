"""Domain values: jobs, specs, leases and batch items. No gRPC, no storage.

Times are integers in Unix milliseconds and durations integers in
milliseconds, so that SQL, Lua and Python agree on them exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import MISSING, dataclass, field, fields
from enum import IntEnum, StrEnum
from typing import Any, NamedTuple, Protocol, TypeVar

T = TypeVar("T")


class JobState(StrEnum):
    """A job's state, stored as text in SQL. The state machine is in `transitions.py`."""

    QUEUED = "queued"
    SCHEDULED = "scheduled"
    LEASED = "leased"
    SUCCEEDED = "succeeded"
    DEAD_LETTERED = "dead_lettered"
    CANCELLED = "cancelled"
    WAITING = "waiting"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.DEAD_LETTERED, JobState.CANCELLED})


class TerminalReason(StrEnum):
    """Why a job reached its terminal state ("" while it is not terminal)."""

    NONE = ""
    SUCCEEDED = "succeeded"
    ATTEMPTS_EXHAUSTED = "attempts_exhausted"
    NOT_RETRYABLE = "not_retryable"
    CANCELLED = "cancelled"
    START_DEADLINE_EXCEEDED = "start_deadline_exceeded"
    RUN_TIME_EXCEEDED = "run_time_exceeded"
    DEPENDENCY_FAILED = "dependency_failed"


class Priority(IntEnum):
    """Priority levels; the value is the rank used as the Redis score (lower runs first)."""

    CRITICAL = 0
    HIGH = 1
    DEFAULT = 2
    LOW = 3


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff between attempts."""

    initial_backoff_ms: int = 1_000
    max_backoff_ms: int = 300_000
    multiplier: float = 2.0
    jitter: float = 0.2


@dataclass(frozen=True)
class JobSpec:
    """What a producer asks for, as received: not yet validated.

    Zero values mean "the default", as in the proto contract.
    """

    queue: str
    type: str
    payload: bytes = b""
    content_type: str = ""
    priority: Priority = Priority.DEFAULT
    metadata: dict[str, str] = field(default_factory=dict)
    max_attempts: int = 0
    retry_policy: RetryPolicy | None = None
    lease_duration_ms: int = 0
    run_at_ms: int | None = None
    delay_ms: int | None = None
    idempotency_key: str = ""
    callback_url: str = ""
    start_within_ms: int | None = None
    max_run_ms: int | None = None
    depends_on: list[str] = field(default_factory=list)
    concurrency_key: str = ""
    # Set by the API's conversion for an EnqueueBatch item that sets nothing but
    # its payload and idempotency key over the call's defaults, which name a
    # queue and a type: every other field is then the defaults' own value, which
    # the service checked once (`validation.defaults`). It checks only the item's
    # own two fields, and makes its job as a copy of the call's first such job
    # (`Dispatcher._drafts`). Not part of the spec's value.
    from_defaults: bool = field(default=False, compare=False, repr=False)


@dataclass(frozen=True)
class Job:
    """A job as recorded in the runs table."""

    id: str
    namespace: str
    queue: str
    type: str
    payload: bytes
    content_type: str
    priority: Priority
    metadata: dict[str, str]
    state: JobState
    attempt: int
    max_attempts: int
    retry_policy: RetryPolicy
    lease_duration_ms: int
    created_ms: int
    run_at_ms: int
    version: int = 1
    idempotency_key: str | None = None
    progress_percent: float = 0.0
    progress_message: str = ""
    started_ms: int | None = None
    finished_ms: int | None = None
    last_error: str = ""
    result: bytes = b""
    result_content_type: str = ""
    lease_holder: str = ""
    lease_token: str = ""
    lease_expires_ms: int | None = None
    # W3C trace context of the Enqueue call (traceparent, tracestate).
    trace_context: dict[str, str] = field(default_factory=dict)
    callback_url: str = ""
    cancel_requested: bool = False
    terminal_reason: TerminalReason = TerminalReason.NONE
    start_deadline_ms: int | None = None
    max_run_ms: int | None = None
    depends_on: list[str] = field(default_factory=list)
    has_dependents: bool = False
    concurrency_key: str = ""
    lease_principal: str = ""  # the API key holding the lease ("" when the server runs open)
    # Computed when read (GetStatus), never stored: why a waiting job waits.
    wait_reason: str = ""

    @property
    def next_run_ms(self) -> int | None:
        """When it runs next: its run time while it waits to run, else None."""
        return self.run_at_ms if self.state in _WAITING_TO_RUN else None


_WAITING_TO_RUN = (JobState.QUEUED, JobState.SCHEDULED)
_JOB_FIELDS = frozenset(Job.__dataclass_fields__)


def job_from_columns(**columns: Any) -> Job:
    """`Job(**columns)` for the hot path (a row read from SQL): every field given,
    already of its type, so the frozen dataclass's __init__ (one
    object.__setattr__ per field) is skipped."""
    if columns.keys() != _JOB_FIELDS:
        raise TypeError(f"Job fields differ: {sorted(set(columns) ^ _JOB_FIELDS)}")
    new = object.__new__(Job)
    new.__dict__.update(columns)
    return new


_Construction = tuple[dict[str, Any], dict[str, Any], frozenset[str]]
_CONSTRUCTIONS: dict[type, _Construction] = {}


def _construction(cls: type) -> _Construction:
    """A frozen dataclass's defaults, default factories and field names (kept per class)."""
    found = _CONSTRUCTIONS.get(cls)
    if found is None:
        if hasattr(cls, "__post_init__") or "__slots__" in cls.__dict__:
            raise TypeError(f"{cls.__name__} cannot be built without its __init__")
        fs = fields(cls)
        defaults = {f.name: f.default for f in fs if f.default is not MISSING}
        factories = {f.name: f.default_factory for f in fs if f.default_factory is not MISSING}
        found = _CONSTRUCTIONS[cls] = (defaults, factories, frozenset(f.name for f in fs))
    return found


def construct(cls: type[T], **values: Any) -> T:
    """`cls(**values)` for a frozen dataclass on a hot path (a new job, a converted
    spec): the same object, defaults and factories applied, without __init__'s
    object.__setattr__ per field (a Job has 38). Values are taken as given, as
    __init__ takes them; an unknown or missing field raises TypeError as it does."""
    defaults, factories, names = _construction(cls)
    new = object.__new__(cls)
    attrs = new.__dict__
    if values.keys() == names:  # every field given: the common case on hot paths
        attrs.update(values)
        return new
    if not names.issuperset(values):
        raise TypeError(f"unknown {cls.__name__} fields: {sorted(set(values) - names)}")
    attrs.update(defaults)
    for name, factory in factories.items():
        if name not in values:
            attrs[name] = factory()
    attrs.update(values)
    if len(attrs) != len(names):
        raise TypeError(f"missing {cls.__name__} fields: {sorted(names - attrs.keys())}")
    return new


def constructor(cls: type[T], given: Iterable[str]) -> Callable[[dict[str, Any]], T]:
    """A maker of `cls` values for a hot path that always sets the same fields
    (`given`) and leaves the others to their defaults: it takes those fields as
    one dict and fills the rest from defaults computed once, where `construct`
    passes and checks keyword arguments: a new job (`Dispatcher._new_job`, its
    id included) took 5.0-5.1 µs through `construct` and 3.4-3.5 this way
    (timeit). The dict must hold every field of `given`; a field it holds
    beyond them overrides its default (a converted spec sets only what its
    message has set). Values are taken as given, unchecked: the caller's test
    compares its values with `construct`'s."""
    defaults, factories, names = _construction(cls)
    wanted = frozenset(given)
    if not wanted <= names:
        raise TypeError(f"unknown {cls.__name__} fields: {sorted(wanted - names)}")
    missing = names - wanted
    if missing & factories.keys():  # each value needs its own object
        raise TypeError(f"fields with a default factory must be given: {sorted(missing)}")
    if not missing <= defaults.keys():
        raise TypeError(f"missing {cls.__name__} fields: {sorted(missing - defaults.keys())}")
    base = {name: defaults[name] for name in missing}

    def make(values: dict[str, Any]) -> T:
        new = object.__new__(cls)
        attrs = new.__dict__
        attrs.update(base)
        attrs.update(values)
        return new

    return make


def evolve(job: Job, **changes: Any) -> Job:
    """`dataclasses.replace` for the hot path: the same result, a tenth of the cost
    (no __init__ call; a Job has no __post_init__ to skip)."""
    if not _JOB_FIELDS.issuperset(changes):
        raise TypeError(f"unknown Job fields: {sorted(set(changes) - _JOB_FIELDS)}")
    new = object.__new__(Job)
    new.__dict__.update(job.__dict__)
    new.__dict__.update(changes)
    return new


class Placeable(Protocol):
    """What the Redis index reads of a job to put it where its row says: a whole
    `Job`, or the `LiveEntry` that the reconciler's scans read instead."""

    @property
    def id(self) -> str: ...
    @property
    def namespace(self) -> str: ...
    @property
    def queue(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def state(self) -> JobState: ...
    @property
    def priority(self) -> Priority: ...
    @property
    def run_at_ms(self) -> int: ...
    @property
    def lease_expires_ms(self) -> int | None: ...
    @property
    def concurrency_key(self) -> str: ...


class LiveEntry(NamedTuple):
    """The columns of a live job's row that place it in the index (`Placeable`).

    The reconciler checks a page of live jobs every pass and a rebuild places
    every one: reading these nine columns instead of whole jobs (payloads,
    results, JSON) keeps a pass from holding the event loop for milliseconds."""

    id: str
    namespace: str
    queue: str
    version: int
    state: JobState
    priority: Priority
    run_at_ms: int
    lease_expires_ms: int | None
    concurrency_key: str


class Acked(NamedTuple):
    """A job acked in one statement (`RunStore.ack_held`): what the Ack goes on to
    use (the index drops it, watchers hear of it, metrics time it), read instead
    of the whole row, whose payload, result and JSON the Ack never looks at.
    A `Placeable`, so that the index can drop it with the rest."""

    id: str
    namespace: str
    queue: str
    version: int
    state: JobState
    attempt: int
    priority: Priority
    run_at_ms: int
    lease_expires_ms: int | None
    concurrency_key: str
    started_ms: int | None
    finished_ms: int | None


@dataclass(frozen=True)
class Transition:
    """One state change of one job, kept in the run_events table."""

    job_id: str
    version: int
    state: JobState
    attempt: int
    at_ms: int
    error: str = ""


@dataclass(frozen=True)
class JobChange:
    """A job before and after one transition at `at_ms`.

    The store writes `after` only if `before.version` is still current.
    """

    before: Job
    after: Job
    at_ms: int

    @property
    def event(self) -> Transition:
        a = self.after
        error = a.last_error if a.last_error != self.before.last_error else ""
        return Transition(a.id, a.version, a.state, a.attempt, self.at_ms, error)


@dataclass(frozen=True)
class Enqueued:
    """The outcome of enqueueing one job."""

    job: Job
    created: bool


@dataclass(frozen=True)
class EnqueueCall:
    """An EnqueueBatch call made with a request_id, as recorded with its jobs."""

    namespace: str
    request_id: str
    created_ms: int
    items: tuple[str | None, ...]  # per item of the call: the job created for it, or None


@dataclass(frozen=True)
class LeaseRequest:
    namespace: str
    worker_id: str
    queues: list[str]
    max_jobs: int
    wait_ms: int
    lease_duration_ms: int | None


@dataclass(frozen=True)
class GrantedLease:
    """A job handed to one worker, fenced by its token."""

    job: Job
    token: str
    expire_ms: int


@dataclass(frozen=True)
class HeartbeatItem:
    token: str
    progress_percent: float | None = None
    progress_message: str | None = None
    lease_duration_ms: int | None = None


@dataclass(frozen=True)
class AckItem:
    token: str
    result: bytes = b""
    result_content_type: str = ""


@dataclass(frozen=True)
class NackItem:
    token: str
    error: str = ""
    retry: bool = True
    retry_after_ms: int | None = None
    release: bool = False  # give it back unfinished: requeued now, the attempt not counted


@dataclass(frozen=True)
class Extended:
    token: str
    expire_ms: int
    cancel_requested: bool = False


@dataclass(frozen=True)
class Settled:
    """The outcome of one Ack or Nack item."""

    token: str
    state: JobState
    next_run_ms: int | None = None


@dataclass(frozen=True)
class StreamRequest:
    namespace: str
    job_ids: list[str]
    queue: str


@dataclass(frozen=True)
class JobUpdate:
    """One message of StreamUpdates: a transition, with the whole job where useful."""

    job_id: str
    queue: str
    version: int
    state: JobState
    attempt: int
    at_ms: int
    error: str = ""
    job: Job | None = None


@dataclass(frozen=True)
class PriorityStats:
    priority: Priority
    queued: int = 0
    scheduled: int = 0
    leased: int = 0
    dead_lettered: int = 0
    oldest_queued_age_ms: int = 0


@dataclass(frozen=True)
class QueueSettings:
    namespace: str
    name: str
    paused: bool = False
    max_depth: int = 0  # 0: unbounded
    # Limits enforced at lease time by lease.lua; 0 means none.
    max_concurrency: int = 0
    rate_per_s: float = 0.0
    burst: int = 0
    key_max_concurrency: int = 0  # for each concurrency key of the queue
    key_rate_per_s: float = 0.0
    key_burst: int = 0


# The limit attributes of QueueSettings (all but the pause flag): one list for
# the service that validates them and the store that writes them.
QUEUE_LIMIT_FIELDS = (
    "max_depth",
    "max_concurrency",
    "rate_per_s",
    "burst",
    "key_max_concurrency",
    "key_rate_per_s",
    "key_burst",
)


@dataclass(frozen=True)
class NamespaceQuota:
    """Per-namespace quotas; 0 means none."""

    namespace: str
    enqueue_rate_per_s: float = 0.0
    enqueue_burst: int = 0
    max_live_jobs: int = 0
    max_leases: int = 0


@dataclass(frozen=True)
class QueueStats:
    namespace: str
    name: str
    priorities: list[PriorityStats]
    succeeded_last_minute: int = 0
    dead_lettered_last_minute: int = 0
    paused: bool = False
    max_depth: int = 0
    settings: QueueSettings | None = None


@dataclass(frozen=True)
class WorkerInfo:
    worker_id: str
    last_seen_ms: int
    leases_held: int


@dataclass(frozen=True)
class Page:
    """A page of results and the opaque token of the next one ("" when done)."""

    items: list[Any]
    next_token: str = ""
