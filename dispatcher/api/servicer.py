"""The DispatcherService servicer: convert, call the domain service, convert back.

No business logic, no error handling (ErrorInterceptor maps errors), no storage.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from dispatcher.api import convert
from dispatcher.service.dispatch import Dispatcher
from dispatcher.service.updates import UpdateStreams
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2 as pb
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2_grpc as pb_grpc

Context = grpc.aio.ServicerContext[Any, Any]


class DispatcherServicer(pb_grpc.DispatcherServiceServicer):
    def __init__(self, service: Dispatcher, streams: UpdateStreams) -> None:
        self._service = service
        self._streams = streams

    async def Enqueue(self, request: pb.EnqueueRequest, context: Context) -> pb.EnqueueResponse:
        basic = convert.basic_view(request.view)
        out = await self._service.enqueue(request.namespace, convert.to_domain_spec(request.job))
        return convert.to_proto_enqueue(out, basic)

    async def EnqueueBatch(
        self, request: pb.EnqueueBatchRequest, context: Context
    ) -> pb.EnqueueBatchResponse:
        reply = convert.PreparedBatchReply(convert.basic_view(request.view))
        # A default that cannot be converted fails the call, by its name.
        defaults = (
            convert.to_domain_spec(request.defaults, "defaults")
            if request.HasField("defaults")
            else None
        )
        out = await self._service.enqueue_batch(
            request.namespace,
            convert.to_domain_specs(request.jobs, defaults),
            while_inserting=reply.prepare,
            request_id=request.request_id,
            defaults=defaults,
        )
        return reply.reply(out)

    async def GetStatus(
        self, request: pb.GetStatusRequest, context: Context
    ) -> pb.GetStatusResponse:
        job = await self._service.get(request.namespace, request.job_id)
        return convert.to_proto_status(job)

    async def StreamUpdates(
        self, request: pb.StreamUpdatesRequest, context: Context
    ) -> AsyncIterator[pb.StreamUpdatesResponse]:
        async for update in self._streams.follow(convert.to_domain_stream(request)):
            yield convert.to_proto_update(update)

    async def Lease(self, request: pb.LeaseRequest, context: Context) -> pb.LeaseResponse:
        inp = convert.to_domain_lease(request, context.time_remaining())
        out = await self._service.lease(inp)
        return convert.to_proto_leases(out)

    async def Heartbeat(
        self, request: pb.HeartbeatRequest, context: Context
    ) -> pb.HeartbeatResponse:
        items = convert.to_domain_heartbeats(request)
        out = await self._service.heartbeat(request.namespace, items)
        return convert.to_proto_heartbeat(items, out)

    async def Ack(self, request: pb.AckRequest, context: Context) -> pb.AckResponse:
        items = convert.to_domain_acks(request)
        out = await self._service.ack(request.namespace, items)
        return convert.to_proto_ack(items, out)

    async def Cancel(self, request: pb.CancelRequest, context: Context) -> pb.CancelResponse:
        job = await self._service.cancel(request.namespace, request.job_id, request.reason)
        return convert.to_proto_cancel(job)

    async def Nack(self, request: pb.NackRequest, context: Context) -> pb.NackResponse:
        items = convert.to_domain_nacks(request)
        out = await self._service.nack(request.namespace, items)
        return convert.to_proto_nack(items, out)
