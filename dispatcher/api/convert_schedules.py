"""Conversions between the ScheduleService messages and domain schedules.

Kept beside `convert.py` (whose helpers it reuses) so that neither module
outgrows its concern. The misfire enum table is explicit; tests/unit checks
that every proto value maps both ways.
"""

from __future__ import annotations

from dispatcher.api.convert import (
    PRIORITY_TO_PROTO,
    _dur,
    _ms,
    _ts,
    to_domain_spec,
    to_proto_retry,
)
from dispatcher.domain import models as m
from dispatcher.domain.errors import InvalidArgument
from dispatcher.domain.schedules import Created, MisfirePolicy, Schedule, ScheduleSpec
from worker_sdk._proto.dispatch.v1 import job_pb2 as jpb
from worker_sdk._proto.dispatch.v1 import schedule_pb2 as spb

MISFIRE_TO_DOMAIN: dict[int, MisfirePolicy] = {
    spb.MISFIRE_POLICY_UNSPECIFIED: MisfirePolicy.CATCH_UP_LATEST,
    spb.MISFIRE_POLICY_CATCH_UP_LATEST: MisfirePolicy.CATCH_UP_LATEST,
    spb.MISFIRE_POLICY_SKIP: MisfirePolicy.SKIP,
}
MISFIRE_TO_PROTO: dict[MisfirePolicy, spb.MisfirePolicy.ValueType] = {
    MisfirePolicy.CATCH_UP_LATEST: spb.MISFIRE_POLICY_CATCH_UP_LATEST,
    MisfirePolicy.SKIP: spb.MISFIRE_POLICY_SKIP,
}


def to_domain_schedule(s: spb.Schedule, field: str = "schedule") -> ScheduleSpec:
    """The definition part of a Schedule; output-only fields are ignored."""
    try:
        policy = MISFIRE_TO_DOMAIN[s.misfire_policy]
    except KeyError:
        raise InvalidArgument.field(
            f"{field}.misfire_policy", "is not a known misfire policy"
        ) from None
    cadence = s.WhichOneof("cadence")
    return ScheduleSpec(
        name=s.name,
        template=to_domain_spec(s.job_template, f"{field}.job_template"),
        cron=s.cron if cadence == "cron" else "",
        interval_ms=_ms(s.interval) if cadence == "interval" else None,
        timezone=s.timezone,
        misfire_policy=policy,
    )


def to_proto_template(t: m.JobSpec) -> jpb.JobSpec:
    out = jpb.JobSpec(
        queue=t.queue,
        type=t.type,
        payload=t.payload,
        content_type=t.content_type,
        priority=PRIORITY_TO_PROTO[t.priority],  # type: ignore[arg-type]
        metadata=t.metadata,
        max_attempts=t.max_attempts,
        callback_url=t.callback_url,
        concurrency_key=t.concurrency_key,
    )
    if t.retry_policy is not None:
        out.retry_policy.CopyFrom(to_proto_retry(t.retry_policy))
    if t.lease_duration_ms:
        out.lease_duration.CopyFrom(_dur(t.lease_duration_ms))
    for name, ms in (
        ("delay", t.delay_ms),
        ("start_within", t.start_within_ms),
        ("max_run_time", t.max_run_ms),
    ):
        if ms is not None:
            getattr(out, name).CopyFrom(_dur(ms))
    return out


def to_proto_schedule(x: Schedule) -> spb.Schedule:
    spec = x.spec
    out = spb.Schedule(
        id=x.id,
        namespace=x.namespace,
        name=spec.name,
        timezone=spec.timezone,
        job_template=to_proto_template(spec.template),
        misfire_policy=MISFIRE_TO_PROTO[spec.misfire_policy],
        paused=x.paused,
        next_fire_time=_ts(x.next_fire_ms),
        last_fire_time=_ts(x.last_fire_ms),
        last_job_id=x.last_job_id,
        last_error=x.last_error,
        create_time=_ts(x.created_ms),
    )
    if spec.interval_ms is not None:
        out.interval.CopyFrom(_dur(spec.interval_ms))
    else:
        out.cron = spec.cron
    return out


def to_proto_created(c: Created) -> spb.CreateScheduleResponse:
    return spb.CreateScheduleResponse(schedule=to_proto_schedule(c.schedule), created=c.created)


def to_proto_schedules(page: m.Page) -> spb.ListSchedulesResponse:
    return spb.ListSchedulesResponse(
        schedules=[to_proto_schedule(x) for x in page.items], next_page_token=page.next_token
    )
