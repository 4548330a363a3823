"""The one place where domain errors become gRPC statuses.

`ErrorInterceptor` wraps every handler (unary and server-streaming): a
`DispatchError` becomes a google.rpc.Status with the canonical code, an
ErrorInfo (reason, domain "dispatch", metadata) and, for INVALID_ARGUMENT, a
BadRequest with the field violations. Anything else becomes INTERNAL with a
generic message and an incident id; the traceback goes to the log only.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2  # type: ignore[import-untyped]
from grpc_status import rpc_status

from dispatcher.api.handlers import Continuation, rewrap
from dispatcher.domain import errors as e

logger = logging.getLogger(__name__)

DOMAIN = "dispatch"

# Most specific class first.
CODES: list[tuple[type[e.DispatchError], grpc.StatusCode]] = [
    (e.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (e.NotFound, grpc.StatusCode.NOT_FOUND),
    (e.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (e.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (e.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (e.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (e.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (e.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
]


def code_of(exc: e.DispatchError) -> grpc.StatusCode:
    for cls, code in CODES:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_status(exc: e.DispatchError) -> status_pb2.Status:
    code = code_of(exc)
    details = [
        _pack(error_details_pb2.ErrorInfo(reason=exc.reason, domain=DOMAIN, metadata=exc.metadata))
    ]
    if isinstance(exc, e.ResourceExhausted) and exc.retry_after_ms > 0:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(exc.retry_after_ms)
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    if isinstance(exc, e.InvalidArgument):
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description
                        )
                        for v in exc.violations
                    ]
                )
            )
        )
    return status_pb2.Status(code=code.value[0], message=exc.message, details=details)


def internal_status() -> status_pb2.Status:
    incident = uuid.uuid4().hex
    logger.exception("unexpected error, incident %s", incident)
    info = error_details_pb2.ErrorInfo(
        reason="INTERNAL", domain=DOMAIN, metadata={"incident": incident}
    )
    return status_pb2.Status(
        code=code_pb2.INTERNAL,
        message=f"internal error (incident {incident})",
        details=[_pack(info)],
    )


async def abort(context: grpc.aio.ServicerContext[Any, Any], status: status_pb2.Status) -> None:
    s = rpc_status.to_status(status)
    await context.abort(s.code, s.details, s.trailing_metadata)


def _status_for(exc: Exception) -> status_pb2.Status:
    if isinstance(exc, e.DispatchError):
        return to_status(exc)
    return internal_status()


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Maps exceptions raised by handlers to rich gRPC statuses."""

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        return rewrap(handler, _wrap_unary, _wrap_stream)


def _wrap_unary(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await fn(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort(context, _status_for(exc))

    return wrapper


def _wrap_stream(fn: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    async def wrapper(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        try:
            async for item in fn(request, context):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort(context, _status_for(exc))

    return wrapper
