"""The ScheduleService servicer: convert, call the schedules service, convert back.

No business logic, no error handling (ErrorInterceptor maps errors), no storage.
"""

from __future__ import annotations

from typing import Any

import grpc

from dispatcher.api import convert_schedules as convert
from dispatcher.service.schedules import Schedules
from worker_sdk._proto.dispatch.v1 import schedule_pb2 as spb
from worker_sdk._proto.dispatch.v1 import schedule_pb2_grpc as spb_grpc

Context = grpc.aio.ServicerContext[Any, Any]


class ScheduleServicer(spb_grpc.ScheduleServiceServicer):
    def __init__(self, service: Schedules) -> None:
        self._service = service

    async def CreateSchedule(
        self, request: spb.CreateScheduleRequest, context: Context
    ) -> spb.CreateScheduleResponse:
        spec = convert.to_domain_schedule(request.schedule)
        out = await self._service.create(request.namespace, spec)
        return convert.to_proto_created(out)

    async def GetSchedule(
        self, request: spb.GetScheduleRequest, context: Context
    ) -> spb.GetScheduleResponse:
        out = await self._service.get(request.namespace, request.schedule_id)
        return spb.GetScheduleResponse(schedule=convert.to_proto_schedule(out))

    async def ListSchedules(
        self, request: spb.ListSchedulesRequest, context: Context
    ) -> spb.ListSchedulesResponse:
        page = await self._service.list_page(
            request.namespace, request.page_size, request.page_token
        )
        return convert.to_proto_schedules(page)

    async def PauseSchedule(
        self, request: spb.PauseScheduleRequest, context: Context
    ) -> spb.PauseScheduleResponse:
        out = await self._service.pause(request.namespace, request.schedule_id)
        return spb.PauseScheduleResponse(schedule=convert.to_proto_schedule(out))

    async def ResumeSchedule(
        self, request: spb.ResumeScheduleRequest, context: Context
    ) -> spb.ResumeScheduleResponse:
        out = await self._service.resume(request.namespace, request.schedule_id)
        return spb.ResumeScheduleResponse(schedule=convert.to_proto_schedule(out))

    async def DeleteSchedule(
        self, request: spb.DeleteScheduleRequest, context: Context
    ) -> spb.DeleteScheduleResponse:
        await self._service.delete(request.namespace, request.schedule_id)
        return spb.DeleteScheduleResponse()
