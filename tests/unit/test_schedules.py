"""Schedule ticks, the misfire plan, the template's storage form and the proto mappings."""

from __future__ import annotations

from datetime import datetime

import pytest

from dispatcher.api import convert_schedules as convert
from dispatcher.domain.models import JobSpec, Priority, RetryPolicy
from dispatcher.domain.schedules import (
    MISFIRE_GRACE_MS,
    MisfirePolicy,
    Plan,
    Schedule,
    ScheduleSpec,
    latest_at_or_before,
    next_after,
    plan,
)
from dispatcher.store.sql.schedules import template_from_json, template_to_json
from worker_sdk._proto.dispatch.v1 import schedule_pb2 as spb

T = JobSpec("q", "t")
MIN = 60_000


def ms(text: str) -> int:
    return round(datetime.fromisoformat(text).timestamp() * 1000)


def test_every_proto_misfire_policy_maps_to_a_domain_policy_and_back() -> None:
    values = [v.number for v in spb.MisfirePolicy.DESCRIPTOR.values if v.number]
    for value in values:
        assert convert.MISFIRE_TO_PROTO[convert.MISFIRE_TO_DOMAIN[value]] == value
    assert set(convert.MISFIRE_TO_PROTO) == set(MisfirePolicy)
    assert convert.MISFIRE_TO_DOMAIN[spb.MISFIRE_POLICY_UNSPECIFIED] is (
        MisfirePolicy.CATCH_UP_LATEST
    )


def test_interval_ticks_are_whole_intervals_after_the_anchor() -> None:
    spec = ScheduleSpec("s", T, interval_ms=10_000)
    assert next_after(spec, 1000, 1000) == 11_000
    assert next_after(spec, 1000, 10_999) == 11_000
    assert next_after(spec, 1000, 11_000) == 21_000
    assert latest_at_or_before(spec, 1000, 21_000) == 21_000
    assert latest_at_or_before(spec, 1000, 20_999) == 11_000


def test_cron_ticks_are_exact_minutes_and_a_tick_at_now_counts_as_passed() -> None:
    spec = ScheduleSpec("s", T, cron="*/15 * * * *", timezone="UTC")
    at = ms("2027-01-15T08:15:00+00:00")
    assert next_after(spec, 0, at) == at + 15 * MIN
    assert next_after(spec, 0, at - 1) == at
    assert latest_at_or_before(spec, 0, at) == at
    assert latest_at_or_before(spec, 0, at - 1) == at - 15 * MIN


def test_a_cron_time_that_daylight_saving_skips_fires_at_the_first_minute_after_it() -> None:
    spec = ScheduleSpec("s", T, cron="30 2 * * *", timezone="Europe/Paris")
    # 2027-03-28: Paris jumps from 02:00 to 03:00.
    assert next_after(spec, 0, ms("2027-03-28T00:00:00+01:00")) == ms("2027-03-28T03:00:00+02:00")


def schedule(spec: ScheduleSpec, next_ms: int) -> Schedule:
    return Schedule("0" * 26, "default", spec, created_ms=0, next_fire_ms=next_ms)


def test_a_tick_within_the_grace_fires_itself_whatever_the_policy() -> None:
    for policy in MisfirePolicy:
        x = schedule(ScheduleSpec("s", T, interval_ms=MIN, misfire_policy=policy), 5 * MIN)
        assert plan(x, 5 * MIN + MISFIRE_GRACE_MS) == Plan(5 * MIN, 6 * MIN)


def test_past_the_grace_catch_up_fires_the_latest_tick_and_skip_fires_none() -> None:
    now = 100 * MIN + 1
    late = ScheduleSpec("s", T, interval_ms=MIN)
    assert plan(schedule(late, 5 * MIN), now) == Plan(100 * MIN, 101 * MIN, misfired=True)
    skip = ScheduleSpec("s", T, interval_ms=MIN, misfire_policy=MisfirePolicy.SKIP)
    assert plan(schedule(skip, 5 * MIN), now) == Plan(None, 101 * MIN, misfired=True)


def test_a_template_survives_its_storage_form_unchanged() -> None:
    full = JobSpec(
        queue="q",
        type="t",
        payload=b"\x00\xff{}",
        content_type="application/json",
        priority=Priority.LOW,
        metadata={"a": "b"},
        max_attempts=7,
        retry_policy=RetryPolicy(1500, 60_000, 1.5, 0.1),
        lease_duration_ms=90_000,
        delay_ms=5000,
        callback_url="https://example.com/hook",
        start_within_ms=60_000,
        max_run_ms=3_600_000,
        concurrency_key="k",
    )
    for spec in (full, T):
        assert template_from_json(template_to_json(spec)) == spec


def test_a_template_survives_the_wire_unchanged() -> None:
    spec = ScheduleSpec("s", T, cron="0 3 * * *", timezone="UTC")
    x = Schedule("0" * 26, "default", spec, created_ms=1, next_fire_ms=2)
    assert convert.to_domain_schedule(convert.to_proto_schedule(x)) == spec


@pytest.mark.parametrize("value", [7, -1])
def test_an_unknown_misfire_policy_number_is_invalid_argument_naming_the_field(value: int) -> None:
    from dispatcher.domain.errors import InvalidArgument

    with pytest.raises(InvalidArgument) as info:
        convert.to_domain_schedule(spb.Schedule(misfire_policy=value))  # type: ignore[arg-type]
    assert info.value.violations[0].field == "schedule.misfire_policy"
