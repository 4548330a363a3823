"""The AdminService servicer: convert, call the admin service, convert back."""

from __future__ import annotations

from typing import Any

import grpc

from dispatcher.api import convert
from dispatcher.service.admin import Admin
from dispatcher.service.quotas import Quotas
from worker_sdk._proto.dispatch.v1 import admin_pb2 as apb
from worker_sdk._proto.dispatch.v1 import admin_pb2_grpc as apb_grpc

Context = grpc.aio.ServicerContext[Any, Any]


class AdminServicer(apb_grpc.AdminServiceServicer):
    def __init__(self, admin: Admin, quotas: Quotas) -> None:
        self._admin = admin
        self._quotas = quotas

    async def ListQueues(
        self, request: apb.ListQueuesRequest, context: Context
    ) -> apb.ListQueuesResponse:
        page = await self._admin.list_queues(
            request.namespace, request.page_size, request.page_token
        )
        return convert.to_proto_queues(page)

    async def ListJobs(
        self, request: apb.ListJobsRequest, context: Context
    ) -> apb.ListJobsResponse:
        state = convert.to_domain_state(request.state, "state")
        page = await self._admin.list_jobs(
            request.namespace, request.queue, state, request.page_size, request.page_token
        )
        return convert.to_proto_jobs(page)

    async def RetryDeadLettered(
        self, request: apb.RetryDeadLetteredRequest, context: Context
    ) -> apb.RetryDeadLetteredResponse:
        n = await self._admin.retry_dead_lettered(request.namespace, request.job_id, request.queue)
        return apb.RetryDeadLetteredResponse(retried=n)

    async def PurgeQueue(
        self, request: apb.PurgeQueueRequest, context: Context
    ) -> apb.PurgeQueueResponse:
        states = convert.to_domain_states(request.states)
        n = await self._admin.purge_queue(request.namespace, request.queue, states)
        return apb.PurgeQueueResponse(purged=n)

    async def PauseQueue(
        self, request: apb.PauseQueueRequest, context: Context
    ) -> apb.PauseQueueResponse:
        await self._admin.queues.pause(request.namespace, request.queue)
        return apb.PauseQueueResponse()

    async def ResumeQueue(
        self, request: apb.ResumeQueueRequest, context: Context
    ) -> apb.ResumeQueueResponse:
        await self._admin.queues.resume(request.namespace, request.queue)
        return apb.ResumeQueueResponse()

    async def SetQueueLimits(
        self, request: apb.SetQueueLimitsRequest, context: Context
    ) -> apb.SetQueueLimitsResponse:
        limits = convert.to_domain_limits(request)
        await self._admin.queues.set_limits(request.namespace, request.queue, limits)
        return apb.SetQueueLimitsResponse()

    async def SetNamespaceQuotas(
        self, request: apb.SetNamespaceQuotasRequest, context: Context
    ) -> apb.SetNamespaceQuotasResponse:
        await self._quotas.set(request.namespace, convert.to_domain_quotas(request))
        return apb.SetNamespaceQuotasResponse()

    async def ListWorkers(
        self, request: apb.ListWorkersRequest, context: Context
    ) -> apb.ListWorkersResponse:
        workers = await self._admin.list_workers(request.namespace)
        return convert.to_proto_workers(workers)
