"""The one hierarchy of domain errors.

Domain code raises these; `dispatcher/api/errors.py` maps each class to a
gRPC status code in one place. Each error has a fixed UPPER_SNAKE `reason`
and string `metadata`; neither ever holds a traceback, SQL or a Redis key.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request, named by its path (`job.queue`, `items[2].lease_token`)."""

    field: str
    description: str


class DispatchError(Exception):
    """Base of every error a client may see."""

    reason = "DISPATCH_ERROR"

    def __init__(self, message: str, metadata: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.metadata = dict(metadata or {})


class InvalidArgument(DispatchError):
    """A request field is malformed or out of range."""

    reason = "INVALID_FIELD"

    def __init__(self, violations: list[FieldViolation], reason: str | None = None) -> None:
        summary = "; ".join(f"{v.field}: {v.description}" for v in violations[:5])
        super().__init__(f"invalid request: {summary}")
        self.violations = violations
        if reason is not None:
            self.reason = reason

    @classmethod
    def field(cls, field: str, description: str) -> InvalidArgument:
        """Build the error for one bad field."""
        return cls([FieldViolation(field, description)])


class NotFound(DispatchError):
    """The named object does not exist (in this namespace)."""

    reason = "NOT_FOUND"


class JobNotFound(NotFound):
    reason = "JOB_NOT_FOUND"


class AlreadyExists(DispatchError):
    reason = "IDEMPOTENCY_KEY_REUSED"


class RequestIdReused(AlreadyExists):
    """An EnqueueBatch's request_id was first used for a different call."""

    reason = "REQUEST_ID_REUSED"


class FailedPrecondition(DispatchError):
    """The object is not in a state that allows the operation."""

    reason = "FAILED_PRECONDITION"


class RefusedByFirstCall(FailedPrecondition):
    """An item of a repeated EnqueueBatch (same request_id) that the first
    call refused: repeating the call cannot enqueue it."""

    reason = "REQUEST_ID_REUSED"


class LeaseExpired(FailedPrecondition):
    """The lease token is not the job's current live lease."""

    reason = "LEASE_EXPIRED"


class InvalidTransition(FailedPrecondition):
    reason = "INVALID_TRANSITION"


class JobCancelled(FailedPrecondition):
    """The job was cancelled while leased: its result is not accepted."""

    reason = "JOB_CANCELLED"


class ResourceExhausted(DispatchError):
    reason = "RESOURCE_EXHAUSTED"

    def __init__(
        self, message: str, metadata: dict[str, str] | None = None, retry_after_ms: int = 0
    ) -> None:
        super().__init__(message, metadata)
        self.retry_after_ms = retry_after_ms


class QueueFull(ResourceExhausted):
    reason = "QUEUE_FULL"


class QuotaExceeded(ResourceExhausted):
    reason = "QUOTA_EXCEEDED"


class Unavailable(DispatchError):
    """A dependency is down or the server cannot serve right now; retrying is safe."""

    reason = "STORE_UNAVAILABLE"


class IndexRebuilding(Unavailable):
    reason = "INDEX_REBUILDING"


class ShuttingDown(Unavailable):
    reason = "SHUTTING_DOWN"


class Unauthenticated(DispatchError):
    """No credentials, or credentials the server does not accept."""

    reason = "UNAUTHENTICATED"


class PermissionDenied(DispatchError):
    """Authenticated, but not allowed to do this."""

    reason = "PERMISSION_DENIED"
