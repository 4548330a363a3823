"""The one interceptor that authenticates every RPC, of every kind.

It reads `authorization: Bearer <token>` (searching every metadata pair; keys
are lowercase), checks the method's role, and binds the request to the
credential's namespace: an empty `namespace` field takes the credential's,
another one is refused. Only the health check, and reflection when it is
served, are open. Tokens are never logged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from dispatcher.domain.auth import Principal, Role, current_principal
from dispatcher.domain.errors import PermissionDenied
from dispatcher.service.authn import Authenticator, authorize

OPEN_PREFIXES = ("/grpc.health.v1.Health/",)
REFLECTION_PREFIX = "/grpc.reflection."

PRODUCER_METHODS = {"Enqueue", "EnqueueBatch", "GetStatus", "StreamUpdates", "Cancel"}
WORKER_METHODS = {"Lease", "Heartbeat", "Ack", "Nack"}


def role_for(method: str) -> Role:
    """The role a fully qualified method needs; anything unknown needs admin."""
    service, _, name = method.strip("/").partition("/")
    if service == "dispatch.v1.DispatcherService":
        if name in WORKER_METHODS:
            return Role.WORKER
        if name in PRODUCER_METHODS:
            return Role.PRODUCER
    if service == "dispatch.v1.ScheduleService":
        return Role.PRODUCER
    return Role.ADMIN


def _authorization(details: grpc.HandlerCallDetails) -> str | None:
    for key, value in details.invocation_metadata or ():
        if key == "authorization":
            return value if isinstance(value, str) else value.decode()
    return None


def _bind_namespace(request: Any, principal: Principal) -> None:
    if not hasattr(request, "namespace"):
        return
    if request.namespace and request.namespace != principal.namespace:
        raise PermissionDenied(
            "the credential belongs to another namespace", {"reason": "NAMESPACE_MISMATCH"}
        )
    request.namespace = principal.namespace


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, authenticator: Authenticator, reflection_open: bool) -> None:
        self._auth = authenticator
        self._reflection_open = reflection_open

    def _is_open(self, method: str) -> bool:
        if method.startswith(OPEN_PREFIXES):
            return True
        return self._reflection_open and method.startswith(REFLECTION_PREFIX)

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(details)
        if handler is None or self._is_open(details.method):
            return handler
        role, header = role_for(details.method), _authorization(details)

        async def admit(request: Any) -> None:
            principal = await self._auth.authenticate(header)
            authorize(principal, role)
            _bind_namespace(request, principal)
            current_principal.set(principal)

        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request: Any, context: Any) -> Any:
                await admit(request)
                return await inner(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream is not None:
            inner_stream = handler.unary_stream

            async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
                await admit(request)
                async for item in inner_stream(request, context):  # type: ignore[attr-defined]
                    yield item

            return grpc.unary_stream_rpc_method_handler(
                stream, handler.request_deserializer, handler.response_serializer
            )
        # We serve no client-streaming RPCs; refuse rather than let one through unchecked.
        raise PermissionDenied("unsupported RPC kind")
