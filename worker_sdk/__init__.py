"""The dispatcher's Python SDK: a producer `Client` (and `SyncClient`) and a `Worker`.

Generated protobuf code lives in `worker_sdk._proto` and never appears in
this API, except through `Client.raw`.
"""

from worker_sdk.client import Client
from worker_sdk.context import JobContext, NonRetryable, Retry
from worker_sdk.errors import (
    AlreadyExists,
    DeadlineExceeded,
    DispatcherError,
    FailedPrecondition,
    InvalidArgument,
    JobFailed,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from worker_sdk.event_loop import LoopUnavailable
from worker_sdk.gc_tuning import tune_for_service
from worker_sdk.options import ConnectOptions, RetryOptions, WorkerOptions
from worker_sdk.queues import QueueLimits
from worker_sdk.schedules import MisfirePolicy, Schedule
from worker_sdk.sync import SyncClient
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
)
from worker_sdk.worker import Worker

__all__ = [
    "AlreadyExists",
    "Backoff",
    "Client",
    "ConnectOptions",
    "DeadlineExceeded",
    "DispatcherError",
    "Enqueued",
    "FailedPrecondition",
    "InvalidArgument",
    "Job",
    "JobContext",
    "JobFailed",
    "JobOptions",
    "JobRequest",
    "JobState",
    "JobUpdate",
    "JobView",
    "LoopUnavailable",
    "MisfirePolicy",
    "NonRetryable",
    "NotFound",
    "PermissionDenied",
    "Priority",
    "Progress",
    "QueueLimits",
    "ResourceExhausted",
    "Retry",
    "RetryOptions",
    "Schedule",
    "SyncClient",
    "TerminalReason",
    "Unauthenticated",
    "Unavailable",
    "Worker",
    "WorkerOptions",
    "tune_for_service",
]
