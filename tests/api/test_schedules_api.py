"""ScheduleService over a real gRPC server: what each RPC answers, and its codes and reasons."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf import duration_pb2

from dispatcher.app import DispatcherApp
from dispatcher.clock import FakeClock
from tests.api.test_errors import _error
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2 as pb
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2_grpc, schedule_pb2_grpc
from worker_sdk._proto.dispatch.v1 import job_pb2 as jpb
from worker_sdk._proto.dispatch.v1 import schedule_pb2 as spb

C = grpc.StatusCode
if TYPE_CHECKING:
    from worker_sdk._proto.dispatch.v1.schedule_pb2_grpc import ScheduleServiceAsyncStub as Stub


@pytest.fixture
def schedules(channel: grpc.aio.Channel) -> Stub:
    return schedule_pb2_grpc.ScheduleServiceStub(channel)


def template(**kw: object) -> jpb.JobSpec:
    kw.setdefault("queue", "reports")
    kw.setdefault("type", "nightly")
    return jpb.JobSpec(**kw)  # type: ignore[arg-type]


def every_minute(name: str = "tick", **kw: object) -> spb.Schedule:
    return spb.Schedule(
        name=name,
        interval=duration_pb2.Duration(seconds=60),
        job_template=template(),
        **kw,  # type: ignore[arg-type]
    )


async def test_a_schedule_is_created_read_listed_paused_resumed_and_deleted(
    schedules: Stub,
) -> None:
    full = template(
        payload=b"{}",
        content_type="application/json",
        priority=jpb.PRIORITY_HIGH,
        metadata={"team": "data"},
        max_attempts=5,
        retry_policy=jpb.RetryPolicy(
            initial_backoff=duration_pb2.Duration(seconds=2),
            max_backoff=duration_pb2.Duration(seconds=60),
            multiplier=3,
            jitter=0,
        ),
        lease_duration={"seconds": 90},
        delay={"seconds": 5},
        start_within={"seconds": 600},
        max_run_time={"seconds": 3600},
        concurrency_key="tenant-1",
    )
    request = spb.Schedule(
        name="nightly",
        cron="0 3 * * *",
        timezone="America/New_York",
        job_template=full,
        misfire_policy=spb.MISFIRE_POLICY_SKIP,
    )
    created = await schedules.CreateSchedule(spb.CreateScheduleRequest(schedule=request))
    x = created.schedule
    assert created.created and len(x.id) == 26 and x.namespace == "default"
    assert (x.cron, x.timezone, x.misfire_policy, x.paused) == (
        "0 3 * * *",
        "America/New_York",
        spb.MISFIRE_POLICY_SKIP,
        False,
    )
    assert x.job_template == full  # the template comes back as it was given
    assert x.next_fire_time.seconds % 3600 == 0 and x.create_time.seconds > 0
    assert not x.HasField("last_fire_time") and x.last_job_id == ""
    again = await schedules.CreateSchedule(spb.CreateScheduleRequest(schedule=request))
    assert (again.created, again.schedule) == (False, x)
    got = await schedules.GetSchedule(spb.GetScheduleRequest(schedule_id=x.id))
    assert got.schedule == x
    await schedules.CreateSchedule(spb.CreateScheduleRequest(schedule=every_minute("a")))
    listed = await schedules.ListSchedules(spb.ListSchedulesRequest(page_size=1))
    assert [s.name for s in listed.schedules] == ["a"] and listed.next_page_token
    rest = await schedules.ListSchedules(
        spb.ListSchedulesRequest(page_token=listed.next_page_token)
    )
    assert [s.name for s in rest.schedules] == ["nightly"] and rest.next_page_token == ""
    paused = await schedules.PauseSchedule(spb.PauseScheduleRequest(schedule_id=x.id))
    assert paused.schedule.paused
    resumed = await schedules.ResumeSchedule(spb.ResumeScheduleRequest(schedule_id=x.id))
    assert not resumed.schedule.paused
    await schedules.DeleteSchedule(spb.DeleteScheduleRequest(schedule_id=x.id))
    code, reason, _, _ = await _error(
        schedules.GetSchedule(spb.GetScheduleRequest(schedule_id=x.id))
    )
    assert (code, reason) == (C.NOT_FOUND, "SCHEDULE_NOT_FOUND")


async def test_an_unset_misfire_policy_and_time_zone_come_back_as_their_defaults(
    schedules: Stub,
) -> None:
    x = (
        await schedules.CreateSchedule(spb.CreateScheduleRequest(schedule=every_minute()))
    ).schedule
    assert (x.misfire_policy, x.timezone) == (spb.MISFIRE_POLICY_CATCH_UP_LATEST, "UTC")
    assert x.WhichOneof("cadence") == "interval" and x.interval.seconds == 60


async def test_a_tick_enqueues_a_job_that_getstatus_shows_with_its_schedule(
    app: DispatcherApp,
    schedules: Stub,
    stub: dispatcher_pb2_grpc.DispatcherServiceAsyncStub,
    clock: FakeClock,
) -> None:
    x = (
        await schedules.CreateSchedule(spb.CreateScheduleRequest(schedule=every_minute()))
    ).schedule
    clock.advance(60)
    await app.components.schedule_firer.run_once(clock.now_ms())
    after = (await schedules.GetSchedule(spb.GetScheduleRequest(schedule_id=x.id))).schedule
    assert after.last_fire_time == x.next_fire_time and after.last_job_id
    job = (await stub.GetStatus(pb.GetStatusRequest(job_id=after.last_job_id))).job
    assert (job.queue, job.type, job.state) == ("reports", "nightly", jpb.JOB_STATE_QUEUED)
    assert job.metadata["dispatch.schedule_id"] == x.id
    assert job.idempotency_key == f"schedule:{x.id}:{x.next_fire_time.ToMilliseconds()}"


@pytest.mark.parametrize(
    ("schedule", "field"),
    [
        (spb.Schedule(name="c", cron="every day", job_template=template()), "schedule.cron"),
        (
            spb.Schedule(name="c", cron="0 3 * * *", timezone="Nowhere", job_template=template()),
            "schedule.timezone",
        ),
        (
            spb.Schedule(
                name="c", interval=duration_pb2.Duration(nanos=1_000_000), job_template=template()
            ),
            "schedule.interval",
        ),
        (spb.Schedule(name="c", job_template=template()), "schedule.cron"),
        (spb.Schedule(name="c", cron="0 3 * * *"), "schedule.job_template.queue"),
        (
            spb.Schedule(name="c", cron="0 3 * * *", job_template=template(idempotency_key="k")),
            "schedule.job_template.idempotency_key",
        ),
        (every_minute(name=""), "schedule.name"),
        (every_minute(misfire_policy=9), "schedule.misfire_policy"),
    ],
)
async def test_a_bad_definition_is_invalid_argument_naming_the_field(
    schedules: Stub, schedule: spb.Schedule, field: str
) -> None:
    code, reason, fields, _ = await _error(
        schedules.CreateSchedule(spb.CreateScheduleRequest(schedule=schedule))
    )
    assert (code, reason) == (C.INVALID_ARGUMENT, "INVALID_FIELD")
    assert field in fields


async def test_another_definition_under_a_taken_name_is_already_exists(schedules: Stub) -> None:
    await schedules.CreateSchedule(spb.CreateScheduleRequest(schedule=every_minute()))
    other = every_minute()
    other.interval.seconds = 120
    code, reason, _, _ = await _error(
        schedules.CreateSchedule(spb.CreateScheduleRequest(schedule=other))
    )
    assert (code, reason) == (C.ALREADY_EXISTS, "SCHEDULE_EXISTS")


@pytest.mark.parametrize(
    "rpc", ["GetSchedule", "PauseSchedule", "ResumeSchedule", "DeleteSchedule"]
)
async def test_an_unknown_or_malformed_schedule_id_is_not_found_or_invalid(
    schedules: Stub, rpc: str
) -> None:
    requests = {
        "GetSchedule": spb.GetScheduleRequest,
        "PauseSchedule": spb.PauseScheduleRequest,
        "ResumeSchedule": spb.ResumeScheduleRequest,
        "DeleteSchedule": spb.DeleteScheduleRequest,
    }
    call = getattr(schedules, rpc)
    unknown = await _error(call(requests[rpc](schedule_id="01M83HEKD3AA16Q5HS2VATHPWR")))
    assert unknown[:2] == (C.NOT_FOUND, "SCHEDULE_NOT_FOUND")
    malformed = await _error(call(requests[rpc](schedule_id="x")))
    assert (malformed[0], malformed[2]) == (C.INVALID_ARGUMENT, ["schedule_id"])


async def test_a_bad_page_token_is_invalid_argument(schedules: Stub) -> None:
    code, _, fields, _ = await _error(
        schedules.ListSchedules(spb.ListSchedulesRequest(page_token="%%%"))
    )
    assert (code, fields) == (C.INVALID_ARGUMENT, ["page_token"])
