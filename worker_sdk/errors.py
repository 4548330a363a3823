"""The SDK's errors: one place turns a gRPC failure into one of these.

Every `DispatcherError` carries the gRPC code, the dispatcher's machine-readable
`reason` (from google.rpc.ErrorInfo, e.g. "LEASE_EXPIRED"), the message, the
field violations of an INVALID_ARGUMENT, and the server's retry hint.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]

if TYPE_CHECKING:
    from worker_sdk.types import Job

_DETAILS_KEY = "grpc-status-details-bin"


class DispatcherError(Exception):
    """A call to the dispatcher failed."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str = "",
        fields: Mapping[str, str] | None = None,
        retry_after: timedelta | None = None,
    ) -> None:
        super().__init__(f"{code.name}{f' / {reason}' if reason else ''}: {message}")
        self.code = code
        self.message = message
        self.reason = reason
        self.fields = dict(fields or {})  # field path -> what is wrong with it
        self.retry_after = retry_after


class InvalidArgument(DispatcherError):
    """The request was malformed; `fields` says which fields and why."""


class NotFound(DispatcherError):
    """No such job (in this namespace)."""


class AlreadyExists(DispatcherError):
    """The idempotency key was used before with a different job."""


class FailedPrecondition(DispatcherError):
    """The job is not in a state that allows this (for a worker: the lease is lost)."""


class ResourceExhausted(DispatcherError):
    """A queue is full or a quota is used up; `retry_after` says when to try again."""


class Unavailable(DispatcherError):
    """The dispatcher could not be reached, or a backend of it is down."""


class Unauthenticated(DispatcherError):
    """No valid token was sent."""


class PermissionDenied(DispatcherError):
    """The token may not do this (role or namespace)."""


class DeadlineExceeded(DispatcherError):
    """The call did not finish within its deadline."""


class JobFailed(Exception):
    """`Client.result` waited for a job that ended without succeeding."""

    def __init__(self, job: Job) -> None:
        super().__init__(
            f"job {job.id} ended {job.state.value} ({job.terminal_reason.value}): {job.last_error}"
        )
        self.job = job


_BY_CODE: Mapping[grpc.StatusCode, type[DispatcherError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}


def error_for(code: grpc.StatusCode, message: str, reason: str = "") -> DispatcherError:
    """The error class for a code (per-item errors of batch calls use this)."""
    return _BY_CODE.get(code, DispatcherError)(code, message, reason)


def code_from_int(value: int) -> grpc.StatusCode:
    for c in grpc.StatusCode:
        if c.value[0] == value:
            return c
    return grpc.StatusCode.UNKNOWN


def from_rpc_error(exc: grpc.aio.AioRpcError) -> DispatcherError:
    """The DispatcherError for a failed call, with the rich details it carried."""
    code = exc.code()
    message = exc.details() or ""
    status = _rich_status(exc.trailing_metadata())
    reason, fields, retry_after = "", dict[str, str](), None
    if status is not None:
        reason, fields, retry_after = _read_details(status.details)
    return _BY_CODE.get(code, DispatcherError)(code, message, reason, fields, retry_after)


def _rich_status(trailers: Any) -> Any:
    for key, value in trailers or ():
        if key == _DETAILS_KEY and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    return None


def _read_details(details: Sequence[any_pb2.Any]) -> tuple[str, dict[str, str], timedelta | None]:
    reason, fields, retry_after = "", {}, None
    info = error_details_pb2.ErrorInfo()
    retry = error_details_pb2.RetryInfo()
    bad = error_details_pb2.BadRequest()
    for any_ in details:
        if any_.Is(info.DESCRIPTOR):
            any_.Unpack(info)
            reason = info.reason
        elif any_.Is(retry.DESCRIPTOR):
            any_.Unpack(retry)
            retry_after = retry.retry_delay.ToTimedelta()
        elif any_.Is(bad.DESCRIPTOR):
            any_.Unpack(bad)
            fields = {v.field: v.description for v in bad.field_violations}
    return reason, fields, retry_after
