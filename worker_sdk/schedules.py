"""Recurring schedules from the SDK: `client.schedules.create(...)` and friends.

A schedule enqueues its job template on each tick of a cron expression (in a
time zone) or of a fixed interval; each tick enqueues exactly one job, even
with several dispatcher replicas (docs/schedules.md).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from worker_sdk import _convert
from worker_sdk._proto.dispatch.v1 import job_pb2 as jpb
from worker_sdk._proto.dispatch.v1 import schedule_pb2 as spb
from worker_sdk._proto.dispatch.v1 import schedule_pb2_grpc
from worker_sdk.types import Backoff, JobOptions, JobRequest

if TYPE_CHECKING:
    from worker_sdk.client import Client


class MisfirePolicy(enum.Enum):
    """What a schedule does about ticks missed while nothing ran (more than 60 s late)."""

    CATCH_UP_LATEST = "catch_up_latest"  # fire once, for the latest missed tick
    SKIP = "skip"  # fire none; go on from the next tick


MISFIRE_TO_PROTO: Mapping[MisfirePolicy, spb.MisfirePolicy.ValueType] = {
    MisfirePolicy.CATCH_UP_LATEST: spb.MISFIRE_POLICY_CATCH_UP_LATEST,
    MisfirePolicy.SKIP: spb.MISFIRE_POLICY_SKIP,
}
MISFIRE_FROM_PROTO = {v: k for k, v in MISFIRE_TO_PROTO.items()} | {
    spb.MISFIRE_POLICY_UNSPECIFIED: MisfirePolicy.CATCH_UP_LATEST
}


@dataclass(frozen=True)
class Schedule:
    """A recurring schedule as the dispatcher keeps it."""

    id: str
    namespace: str
    name: str
    cron: str | None
    interval: timedelta | None
    timezone: str
    job: JobRequest  # the template each tick enqueues
    misfire_policy: MisfirePolicy
    paused: bool
    next_fire_at: datetime | None
    last_fire_at: datetime | None
    last_job_id: str
    last_error: str
    created_at: datetime | None


class Schedules:
    """The schedule calls of one `Client` (every call has its deadline and retries)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    @property
    def _stub(self) -> Any:
        return schedule_pb2_grpc.ScheduleServiceStub(self._client.channel)

    async def _unary(self, method: str, request: Any) -> Any:
        return await self._client._unary(method, request, idempotent=True, stub=self._stub)

    async def create(
        self,
        name: str,
        job: JobRequest,
        *,
        cron: str | None = None,
        interval: timedelta | None = None,
        timezone: str = "UTC",
        misfire_policy: MisfirePolicy = MisfirePolicy.CATCH_UP_LATEST,
    ) -> Schedule:
        """Create a schedule (set `cron` or `interval`). Creating the same one again
        returns it; another definition under a taken name raises AlreadyExists.

        Raises:
            InvalidArgument: a bad cron, time zone, interval or template (`fields`).
            AlreadyExists: the name is taken by a different definition.
        """
        if (cron is None) == (interval is None):
            raise ValueError("set exactly one of cron and interval")
        if job.options.idempotency_key is not None:
            raise ValueError("a schedule's job template cannot carry an idempotency key")
        schedule = spb.Schedule(
            name=name,
            timezone=timezone,
            job_template=_convert.job_spec(job, ""),
            misfire_policy=MISFIRE_TO_PROTO[misfire_policy],
        )
        if cron is not None:
            schedule.cron = cron
        if interval is not None:
            schedule.interval.CopyFrom(_convert.duration(interval))
        ns = self._client.namespace
        reply = await self._unary(
            "CreateSchedule", spb.CreateScheduleRequest(namespace=ns, schedule=schedule)
        )
        return _schedule(reply.schedule)

    async def get(self, schedule_id: str) -> Schedule:
        """One schedule. Raises NotFound."""
        request = spb.GetScheduleRequest(namespace=self._client.namespace, schedule_id=schedule_id)
        return _schedule((await self._unary("GetSchedule", request)).schedule)

    async def list(self) -> list[Schedule]:
        """Every schedule of the namespace (all pages)."""
        out: list[Schedule] = []
        token = ""
        while True:
            request = spb.ListSchedulesRequest(
                namespace=self._client.namespace, page_size=500, page_token=token
            )
            reply = await self._unary("ListSchedules", request)
            out += [_schedule(s) for s in reply.schedules]
            token = reply.next_page_token
            if not token:
                return out

    async def pause(self, schedule_id: str) -> Schedule:
        """Stop firing; ticks passed while paused never fire."""
        request = spb.PauseScheduleRequest(
            namespace=self._client.namespace, schedule_id=schedule_id
        )
        return _schedule((await self._unary("PauseSchedule", request)).schedule)

    async def resume(self, schedule_id: str) -> Schedule:
        """Fire again, from the first tick after now."""
        request = spb.ResumeScheduleRequest(
            namespace=self._client.namespace, schedule_id=schedule_id
        )
        return _schedule((await self._unary("ResumeSchedule", request)).schedule)

    async def delete(self, schedule_id: str) -> None:
        """Delete the schedule (jobs it already enqueued stay)."""
        request = spb.DeleteScheduleRequest(
            namespace=self._client.namespace, schedule_id=schedule_id
        )
        await self._unary("DeleteSchedule", request)


def _schedule(s: spb.Schedule) -> Schedule:
    def when(field: str) -> datetime | None:
        return _convert.from_timestamp(getattr(s, field), s.HasField(field))  # type: ignore[arg-type]

    return Schedule(
        id=s.id,
        namespace=s.namespace,
        name=s.name,
        cron=s.cron if s.WhichOneof("cadence") == "cron" else None,
        interval=s.interval.ToTimedelta() if s.WhichOneof("cadence") == "interval" else None,
        timezone=s.timezone,
        job=_template(s.job_template),
        misfire_policy=MISFIRE_FROM_PROTO.get(s.misfire_policy, MisfirePolicy.CATCH_UP_LATEST),
        paused=s.paused,
        next_fire_at=when("next_fire_time"),
        last_fire_at=when("last_fire_time"),
        last_job_id=s.last_job_id,
        last_error=s.last_error,
        created_at=when("create_time"),
    )


def _template(j: jpb.JobSpec) -> JobRequest:
    def maybe(field: str) -> timedelta | None:
        return getattr(j, field).ToTimedelta() if j.HasField(field) else None  # type: ignore[arg-type]

    r = j.retry_policy
    backoff = None
    if j.HasField("retry_policy"):
        backoff = Backoff(
            initial=r.initial_backoff.ToTimedelta() if r.HasField("initial_backoff") else None,
            maximum=r.max_backoff.ToTimedelta() if r.HasField("max_backoff") else None,
            multiplier=r.multiplier if r.HasField("multiplier") else None,
            jitter=r.jitter if r.HasField("jitter") else None,
        )
    options = JobOptions(
        priority=_convert.PRIORITY_FROM_PROTO.get(j.priority, JobOptions().priority),
        metadata=dict(j.metadata),
        max_attempts=j.max_attempts or None,
        backoff=backoff,
        lease_duration=maybe("lease_duration"),
        delay=maybe("delay"),
        callback_url=j.callback_url,
        start_within=maybe("start_within"),
        max_run_time=maybe("max_run_time"),
        concurrency_key=j.concurrency_key,
        content_type=j.content_type,
    )
    return JobRequest(j.queue, j.type, j.payload, options)
