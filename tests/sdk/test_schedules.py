"""Recurring schedules through the SDK against a real dispatcher, on each backend."""

from __future__ import annotations

from datetime import timedelta

import pytest

from dispatcher.app import DispatcherApp
from dispatcher.clock import FakeClock
from worker_sdk import (
    Client,
    InvalidArgument,
    JobOptions,
    JobRequest,
    MisfirePolicy,
    Priority,
)


async def test_a_schedule_is_created_listed_paused_resumed_and_deleted(client: Client) -> None:
    template = JobRequest("reports", "daily", {"kind": "sales"}, JobOptions(priority=Priority.LOW))
    made = await client.schedules.create(
        "nightly", template, cron="30 2 * * *", timezone="Europe/Paris",
        misfire_policy=MisfirePolicy.SKIP,
    )  # fmt: skip
    assert (made.name, made.cron, made.interval, made.timezone) == (
        "nightly", "30 2 * * *", None, "Europe/Paris",
    )  # fmt: skip
    assert made.job.queue == "reports" and made.job.options.priority is Priority.LOW
    assert made.misfire_policy is MisfirePolicy.SKIP and made.next_fire_at is not None
    assert [s.id for s in await client.schedules.list()] == [made.id]
    assert (await client.schedules.pause(made.id)).paused
    assert not (await client.schedules.resume(made.id)).paused
    assert (await client.schedules.get(made.id)).id == made.id
    await client.schedules.delete(made.id)
    assert await client.schedules.list() == []


async def test_each_tick_of_an_interval_schedule_enqueues_its_template(
    client: Client, app: DispatcherApp, clock: FakeClock
) -> None:
    template = JobRequest("q", "ping", {"n": 1})
    made = await client.schedules.create("pinger", template, interval=timedelta(minutes=1))
    clock.advance(61)
    await app.components.schedule_firer.run_once(clock.now_ms())
    fired = await client.schedules.get(made.id)
    job = await client.get(fired.last_job_id)
    assert (job.queue, job.type, job.json()) == ("q", "ping", {"n": 1})
    assert job.metadata["dispatch.schedule_id"] == made.id


async def test_a_bad_cron_is_invalid_argument_naming_the_field(client: Client) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await client.schedules.create("bad", JobRequest("q", "t"), cron="61 * * * *")
    assert any("cron" in f for f in caught.value.fields)
