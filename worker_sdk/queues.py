"""Queue control from the SDK (needs the admin role): `client.queues.pause(...)` and friends."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from worker_sdk._proto.dispatch.v1 import admin_pb2, admin_pb2_grpc

if TYPE_CHECKING:
    from worker_sdk.client import Client


@dataclass(frozen=True)
class QueueLimits:
    """Limits of one queue; None leaves a limit as it is, 0 removes it."""

    max_depth: int | None = None  # past it, Enqueue fails fast with RESOURCE_EXHAUSTED
    max_concurrency: int | None = None  # jobs leased at once
    rate_per_second: float | None = None  # leases per second...
    burst: int | None = None  # ...with this burst
    key_max_concurrency: int | None = None  # the same, per concurrency key
    key_rate_per_second: float | None = None
    key_burst: int | None = None


class Queues:
    """The queue-control calls of one `Client` (every call has its deadline and retries)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    async def _unary(self, method: str, request: Any) -> Any:
        stub = admin_pb2_grpc.AdminServiceStub(self._client.channel)
        return await self._client._unary(method, request, idempotent=True, stub=stub)

    async def pause(self, queue: str) -> None:
        """Grant no more leases from this queue (on every replica); Enqueue still works."""
        ns = self._client.namespace
        await self._unary("PauseQueue", admin_pb2.PauseQueueRequest(namespace=ns, queue=queue))

    async def resume(self, queue: str) -> None:
        """Lease from this queue again."""
        ns = self._client.namespace
        await self._unary("ResumeQueue", admin_pb2.ResumeQueueRequest(namespace=ns, queue=queue))

    async def set_limits(self, queue: str, limits: QueueLimits) -> None:
        """Set the queue's depth, concurrency and rate limits (enforced across replicas).

        Raises:
            InvalidArgument: a limit out of range (`fields`).
        """
        given = {f.name: getattr(limits, f.name) for f in fields(limits)}
        request = admin_pb2.SetQueueLimitsRequest(
            namespace=self._client.namespace,
            queue=queue,
            **{k: v for k, v in given.items() if v is not None},
        )
        await self._unary("SetQueueLimits", request)
