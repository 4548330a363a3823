"""Recurring schedules on the domain service, with a fake clock, once per backend:
management, ticks, several replicas at once, restarts, crashes and bad input."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from dispatcher.app import Components
from dispatcher.clock import FakeClock
from dispatcher.domain.errors import DispatchError, InvalidArgument, Unavailable
from dispatcher.domain.models import Enqueued, Job, JobSpec
from dispatcher.domain.schedules import (
    META_SCHEDULE_ID,
    META_SCHEDULE_TIME,
    MisfirePolicy,
    ScheduleExists,
    ScheduleNotFound,
    ScheduleSpec,
)
from dispatcher.service.schedules import CLAIM_MS, RETRY_MS, ScheduleFirer
from tests.backends import Backend
from tests.service.helpers import spec

HOUR_S = 3600.0


def every(seconds: float, name: str = "s", **kw: object) -> ScheduleSpec:
    return ScheduleSpec(name=name, template=spec("q"), interval_ms=round(seconds * 1000), **kw)  # type: ignore[arg-type]


def cron(expr: str, name: str = "c", **kw: object) -> ScheduleSpec:
    return ScheduleSpec(name=name, template=spec("q"), cron=expr, **kw)  # type: ignore[arg-type]


async def jobs(c: Components, queue: str = "q") -> list[Job]:
    """Every job of a queue, oldest first."""
    page = await c.admin.list_jobs("", queue, None, 1000, "")
    return sorted(page.items, key=lambda j: j.id)


async def fresh_replica(backend: Backend, clock: FakeClock) -> Components:
    c = backend.components(clock)
    await c.reconciler.ensure_index()
    return c


def ms(text: str) -> int:
    return round(datetime.fromisoformat(text).timestamp() * 1000)


# ---- management --------------------------------------------------------------


async def test_a_schedule_can_be_created_read_listed_paused_resumed_and_deleted(
    replica: Components,
) -> None:
    s = replica.schedules
    created = await s.create("", every(60, name="b"))
    assert created.created
    x = created.schedule
    assert (x.namespace, x.spec.timezone, x.spec.misfire_policy, x.paused) == (
        "default",
        "UTC",
        MisfirePolicy.CATCH_UP_LATEST,
        False,
    )
    assert x.next_fire_ms == x.created_ms + 60_000
    assert await s.get("", x.id) == x
    await s.create("", every(60, name="a"))
    await s.create("", every(60, name="c"))
    first = await s.list_page("", 2, "")
    second = await s.list_page("", 2, first.next_token)
    assert [y.spec.name for y in first.items + second.items] == ["a", "b", "c"]
    assert second.next_token == ""
    assert (await s.pause("", x.id)).paused
    assert (await s.get("", x.id)).paused
    assert not (await s.resume("", x.id)).paused
    await s.delete("", x.id)
    with pytest.raises(ScheduleNotFound):
        await s.get("", x.id)
    with pytest.raises(ScheduleNotFound):
        await s.delete("", x.id)


async def test_create_again_returns_the_same_schedule_and_another_definition_of_the_name_is_refused(
    replica: Components, clock: FakeClock
) -> None:
    first = (await replica.schedules.create("", every(60))).schedule
    clock.advance(5)
    again = await replica.schedules.create("", every(60))
    assert (again.created, again.schedule) == (False, first)
    with pytest.raises(ScheduleExists) as info:
        await replica.schedules.create("", every(30))
    assert info.value.metadata["schedule_id"] == first.id
    # The same name in another namespace is another schedule.
    assert (await replica.schedules.create("other", every(30))).created


async def test_another_namespaces_schedule_is_not_found_and_left_alone(
    replica: Components,
) -> None:
    x = (await replica.schedules.create("tenant-a", every(60))).schedule
    for op in (
        replica.schedules.get,
        replica.schedules.pause,
        replica.schedules.resume,
        replica.schedules.delete,
    ):
        with pytest.raises(ScheduleNotFound):
            await op("tenant-b", x.id)
    assert (await replica.schedules.list_page("tenant-b", 0, "")).items == []
    assert await replica.schedules.get("tenant-a", x.id) == x


# ---- ticks -----------------------------------------------------------------------


async def test_an_interval_schedule_enqueues_one_job_per_tick_as_the_clock_advances(
    replica: Components, clock: FakeClock
) -> None:
    x = (await replica.schedules.create("", every(10))).schedule
    fire = replica.schedule_firer.run_once
    assert (await fire(clock.now_ms())).fired == 0
    clock.advance(9.999)
    assert (await fire(clock.now_ms())).fired == 0
    for n in range(1, 4):
        clock.advance(10)
        await fire(clock.now_ms())
        await fire(clock.now_ms())  # a second pass at the same time fires nothing more
        assert len(await jobs(replica)) == n
    ticks = [x.created_ms + 10_000 * n for n in (1, 2, 3)]
    got = await jobs(replica)
    assert [j.idempotency_key for j in got] == [f"schedule:{x.id}:{t}" for t in ticks]
    assert got[0].metadata[META_SCHEDULE_ID] == x.id
    assert got[0].metadata[META_SCHEDULE_TIME] == datetime.fromtimestamp(
        ticks[0] / 1000, UTC
    ).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert (got[0].type, got[0].queue) == ("t", "q")
    after = await replica.schedules.get("", x.id)
    assert (after.last_fire_ms, after.last_job_id, after.next_fire_ms) == (
        ticks[-1],
        got[-1].id,
        ticks[-1] + 10_000,
    )


async def test_a_cron_schedule_fires_on_its_wall_clock_times_in_its_time_zone(
    backend: Backend,
) -> None:
    paris = ZoneInfo("Europe/Paris")
    clock = FakeClock(ms("2027-03-26T12:00:00+00:00"))  # a Friday; DST starts on Sunday the 28th
    c = await fresh_replica(backend, clock)
    x = (await c.schedules.create("", cron("30 9 * * *", timezone="Europe/Paris"))).schedule
    assert x.next_fire_ms == ms("2027-03-27T09:30:00+01:00")
    for _ in range(3):
        due = (await c.schedules.get("", x.id)).next_fire_ms
        clock.advance((due - clock.now_ms()) / 1000)  # to the tick itself: on time
        assert (await c.schedule_firer.run_once(clock.now_ms())).fired == 1
    fired: list[int] = []
    for j in await jobs(c):
        assert j.idempotency_key is not None
        fired.append(int(j.idempotency_key.rsplit(":", 1)[1]))
    local = [datetime.fromtimestamp(t / 1000, paris).strftime("%d %H:%M %z") for t in fired]
    assert local == ["27 09:30 +0100", "28 09:30 +0200", "29 09:30 +0200"]


async def test_a_short_outage_loses_no_tick_even_under_skip(
    replica: Components, clock: FakeClock
) -> None:
    await replica.schedules.create("", every(10, misfire_policy=MisfirePolicy.SKIP))
    clock.advance(55)  # five ticks due, the oldest 45 s late: within the misfire grace
    stats = await replica.schedule_firer.run_once(clock.now_ms())
    assert (stats.fired, stats.skipped) == (5, 0)
    assert len(await jobs(replica)) == 5


async def test_a_paused_schedule_fires_nothing_and_resumes_from_the_first_tick_after_now(
    replica: Components, clock: FakeClock
) -> None:
    x = (await replica.schedules.create("", every(10))).schedule
    await replica.schedules.pause("", x.id)
    clock.advance(HOUR_S)
    assert (await replica.schedule_firer.run_once(clock.now_ms())).fired == 0
    resumed = await replica.schedules.resume("", x.id)
    assert clock.now_ms() < resumed.next_fire_ms <= clock.now_ms() + 10_000
    assert (resumed.next_fire_ms - x.created_ms) % 10_000 == 0
    assert (await replica.schedule_firer.run_once(clock.now_ms())).fired == 0
    clock.advance(10)
    assert (await replica.schedule_firer.run_once(clock.now_ms())).fired == 1
    assert len(await jobs(replica)) == 1


async def test_a_deleted_schedule_fires_no_more(replica: Components, clock: FakeClock) -> None:
    x = (await replica.schedules.create("", every(10))).schedule
    clock.advance(10)
    await replica.schedule_firer.run_once(clock.now_ms())
    await replica.schedules.delete("", x.id)
    clock.advance(100)
    assert (await replica.schedule_firer.run_once(clock.now_ms())).fired == 0
    assert len(await jobs(replica)) == 1  # the job it made stays


# ---- several replicas, restarts, crashes -------------------------------------------------


async def test_two_replicas_firing_the_same_ticks_at_once_enqueue_exactly_one_job_per_tick(
    replica: Components, backend: Backend, clock: FakeClock
) -> None:
    other = await fresh_replica(backend, clock)
    for n in range(5):
        await replica.schedules.create("", every(10, name=f"s{n}"))
    for _ in range(4):
        clock.advance(10)
        a, b = await asyncio.gather(
            replica.schedule_firer.run_once(clock.now_ms()),
            other.schedule_firer.run_once(clock.now_ms()),
        )
        assert a.fired + b.fired == 5
    got = await jobs(replica)
    assert len(got) == 20 and len({j.idempotency_key for j in got}) == 20


async def test_when_claims_lapse_the_idempotency_key_still_keeps_one_job_per_tick(
    replica: Components, backend: Backend, clock: FakeClock
) -> None:
    other = await fresh_replica(backend, clock)
    # claim_ms=0: a claim protects nothing, so both replicas enqueue every tick.
    firers = [replace_claim(replica), replace_claim(other)]
    x = (await replica.schedules.create("", every(10))).schedule
    for _ in range(3):
        clock.advance(10)
        await asyncio.gather(*(f.run_once(clock.now_ms()) for f in firers))
    got = await jobs(replica)
    assert [j.idempotency_key for j in got] == [
        f"schedule:{x.id}:{x.created_ms + 10_000 * n}" for n in (1, 2, 3)
    ]


def replace_claim(c: Components) -> ScheduleFirer:
    return ScheduleFirer(c.schedules.store, c.dispatcher, claim_ms=0)


async def test_after_downtime_catch_up_latest_fires_once_for_the_latest_missed_tick(
    replica: Components, backend: Backend, clock: FakeClock
) -> None:
    x = (await replica.schedules.create("", every(60))).schedule
    clock.advance(60)
    await replica.schedule_firer.run_once(clock.now_ms())
    clock.advance(5 * HOUR_S + 30)  # every replica was down; 300 ticks passed
    restarted = await fresh_replica(backend, clock)
    stats = await restarted.schedule_firer.run_once(clock.now_ms())
    assert stats.fired == 1
    await restarted.schedule_firer.run_once(clock.now_ms())
    got = await jobs(restarted)
    latest = x.created_ms + 301 * 60_000
    assert len(got) == 2 and got[1].idempotency_key == f"schedule:{x.id}:{latest}"
    after = await restarted.schedules.get("", x.id)
    assert after.next_fire_ms == latest + 60_000 > clock.now_ms()
    clock.advance(30)
    await restarted.schedule_firer.run_once(clock.now_ms())
    assert len(await jobs(restarted)) == 3  # and it carries on as usual


async def test_after_downtime_skip_fires_nothing_for_the_missed_ticks_and_continues_from_now(
    replica: Components, backend: Backend, clock: FakeClock
) -> None:
    x = (await replica.schedules.create("", every(60, misfire_policy=MisfirePolicy.SKIP))).schedule
    clock.advance(5 * HOUR_S + 30)
    restarted = await fresh_replica(backend, clock)
    stats = await restarted.schedule_firer.run_once(clock.now_ms())
    assert (stats.fired, stats.skipped) == (0, 1)
    assert await jobs(restarted) == []
    after = await restarted.schedules.get("", x.id)
    assert after.next_fire_ms == x.created_ms + 301 * 60_000
    clock.advance(30)
    assert (await restarted.schedule_firer.run_once(clock.now_ms())).fired == 1


class Crash(BaseException):
    """The replica dies here (a BaseException, like a cancellation: nothing catches it)."""


async def test_a_crash_between_enqueue_and_advance_does_not_duplicate_the_job(
    replica: Components, backend: Backend, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = (await replica.schedules.create("", every(10))).schedule

    async def crash(*args: object, **kw: object) -> bool:
        raise Crash()

    monkeypatch.setattr(replica.schedules.store, "advance", crash)
    clock.advance(10)
    with pytest.raises(Crash):
        await replica.schedule_firer.run_once(clock.now_ms())
    (job,) = await jobs(replica)  # enqueued, but the schedule still points at this tick
    other = await fresh_replica(backend, clock)
    assert (await other.schedule_firer.run_once(clock.now_ms())).fired == 0  # claimed
    clock.advance(CLAIM_MS / 1000)  # the claim lapses; the tick is still within the grace
    assert (await other.schedule_firer.run_once(clock.now_ms())).fired == 4  # 10 s .. 40 s
    got = await jobs(other)
    assert got[0].id == job.id  # the first tick's job was found again, not made again
    assert [j.idempotency_key for j in got] == [
        f"schedule:{x.id}:{x.created_ms + 10_000 * n}" for n in (1, 2, 3, 4)
    ]
    after = await other.schedules.get("", x.id)
    assert (after.last_job_id, after.last_fire_ms) == (got[-1].id, x.created_ms + 40_000)


async def test_a_crash_after_claiming_and_before_enqueueing_loses_no_tick(
    replica: Components, backend: Backend, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = (await replica.schedules.create("", every(10))).schedule

    async def crash(*args: object, **kw: object) -> object:
        raise Crash()

    monkeypatch.setattr(replica.dispatcher, "enqueue", crash)
    clock.advance(10)
    with pytest.raises(Crash):
        await replica.schedule_firer.run_once(clock.now_ms())
    assert await jobs(replica) == []
    other = await fresh_replica(backend, clock)
    clock.advance(CLAIM_MS / 1000)
    await other.schedule_firer.run_once(clock.now_ms())
    got = await jobs(other)
    assert [j.idempotency_key for j in got][:1] == [f"schedule:{x.id}:{x.created_ms + 10_000}"]
    assert len(got) == len({j.idempotency_key for j in got}) == 4  # 10 s, then 20, 30, 40


async def test_a_retryable_enqueue_failure_keeps_the_tick_and_says_why(
    replica: Components, clock: FakeClock
) -> None:
    x = (await replica.schedules.create("", every(10))).schedule
    await replica.queues.set_max_depth("", "q", 1)
    await replica.dispatcher.enqueue("", spec("q"))  # the queue is full
    clock.advance(10)
    assert (await replica.schedule_firer.run_once(clock.now_ms())).retried == 1
    stuck = await replica.schedules.get("", x.id)
    assert stuck.next_fire_ms == x.created_ms + 10_000 and "QUEUE_FULL" in stuck.last_error
    await replica.queues.set_max_depth("", "q", 0)
    assert (await replica.schedule_firer.run_once(clock.now_ms())).fired == 0  # not at once
    clock.advance(RETRY_MS / 1000)
    assert (await replica.schedule_firer.run_once(clock.now_ms())).fired == 1
    done = await replica.schedules.get("", x.id)
    assert (done.last_error, done.last_fire_ms) == ("", x.created_ms + 10_000)


async def test_a_failure_of_one_schedule_leaves_it_to_a_later_pass_and_fires_the_others(
    replica: Components, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = (await replica.schedules.create("", every(10, name="broken"))).schedule
    await replica.schedules.create("", every(10, name="fine"))
    enqueue = replica.dispatcher.enqueue

    async def flaky(ns: str, job: JobSpec) -> Enqueued:
        if job.metadata[META_SCHEDULE_ID] == broken.id:
            raise RuntimeError("a bug")
        return await enqueue(ns, job)

    clock.advance(10)
    with monkeypatch.context() as m:
        m.setattr(replica.dispatcher, "enqueue", flaky)
        stats = await replica.schedule_firer.run_once(clock.now_ms())
    assert (stats.fired, stats.errors) == (1, 1)
    clock.advance(CLAIM_MS / 1000)  # the broken one's claim lapses: it is tried again
    await replica.schedule_firer.run_once(clock.now_ms())
    fired = {j.metadata[META_SCHEDULE_ID] for j in await jobs(replica)}
    assert broken.id in fired and len(fired) == 2


async def test_the_store_being_down_fails_the_pass_and_the_tick_fires_later(
    replica: Components, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    await replica.schedules.create("", every(10))

    async def down(*args: object, **kw: object) -> object:
        raise Unavailable("the database is unavailable")

    clock.advance(10)
    with monkeypatch.context() as m:
        m.setattr(replica.schedules.store, "claim_due", down)
        with pytest.raises(DispatchError):
            await replica.schedule_firer.run_once(clock.now_ms())
    assert (await replica.schedule_firer.run_once(clock.now_ms())).fired == 1


async def test_schedules_live_in_sql_and_fire_after_a_redis_wipe(
    replica: Components, backend: Backend, clock: FakeClock
) -> None:
    await replica.schedules.create("", every(10))
    await backend.wipe_redis()
    fresh = await fresh_replica(backend, clock)
    clock.advance(10)
    assert (await fresh.schedule_firer.run_once(clock.now_ms())).fired == 1
    assert len(await jobs(fresh)) == 1


# ---- bad input ---------------------------------------------------------------------------


BAD: list[tuple[ScheduleSpec, str]] = [
    (cron("* * * *"), "schedule.cron"),
    (cron("* * * * * *"), "schedule.cron"),
    (cron("61 * * * *"), "schedule.cron"),
    (cron("@daily"), "schedule.cron"),
    (cron("R * * * *"), "schedule.cron"),  # croniter's random minute: a tick must be fixed
    (cron("0 0 30 2 *"), "schedule.cron"),
    (cron(""), "schedule.cron"),
    (cron("0 9 * * *", timezone="Mars/Olympus"), "schedule.timezone"),
    (cron("0 9 * * *", timezone="../../etc/passwd"), "schedule.timezone"),
    (cron("0 9 * * *", timezone="/etc/localtime"), "schedule.timezone"),
    (every(0.5), "schedule.interval"),
    (every(-10), "schedule.interval"),
    (every(400 * 24 * HOUR_S), "schedule.interval"),
    (replace(cron("0 9 * * *"), interval_ms=60_000), "schedule.cron"),
    (replace(every(60), name="no spaces"), "schedule.name"),
    (replace(every(60), template=spec("bad queue")), "schedule.job_template.queue"),
    (replace(every(60), template=spec("q", type="")), "schedule.job_template.type"),
    (replace(every(60), template=spec("q", max_attempts=-1)), "schedule.job_template.max_attempts"),
    (
        replace(every(60), template=spec("q", idempotency_key="k")),
        "schedule.job_template.idempotency_key",
    ),
    (replace(every(60), template=spec("q", run_at_ms=1)), "schedule.job_template.run_at"),
    (
        replace(every(60), template=spec("q", depends_on=["01M83HEKD3AA16Q5HS2VATHPWR"])),
        "schedule.job_template.depends_on",
    ),
    (
        replace(every(60), template=spec("q", metadata={f"k{i}": "v" for i in range(63)})),
        "schedule.job_template.metadata",  # 63 + the two a tick adds > 64
    ),
]


@pytest.mark.parametrize(("bad", "field"), BAD, ids=[f"{f}:{i}" for i, (_, f) in enumerate(BAD)])
async def test_a_bad_definition_is_refused_naming_the_field_and_nothing_is_written(
    replica: Components, bad: ScheduleSpec, field: str
) -> None:
    with pytest.raises(InvalidArgument) as info:
        await replica.schedules.create("", bad)
    assert field in [v.field for v in info.value.violations]
    assert (await replica.schedules.list_page("", 0, "")).items == []


async def test_a_malformed_schedule_id_is_invalid_argument(replica: Components) -> None:
    with pytest.raises(InvalidArgument) as info:
        await replica.schedules.get("", "nope")
    assert info.value.violations[0].field == "schedule_id"
