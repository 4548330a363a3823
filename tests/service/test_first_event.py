"""A job born QUEUED has no `run_events` row for its version 1: its `runs` row
implies it (QUEUED, attempt 0, at its creation), and `RunStore.events_after`
gives it from there. Every other first state has its row. The history a reader
sees is the same either way, on both backends."""

from __future__ import annotations

from sqlalchemy import func, insert, select

from dispatcher.app import Components
from dispatcher.domain.models import JobState, Transition
from dispatcher.store.sql.tables import run_events
from tests.service.helpers import ack, lease, spec


async def _rows(c: Components, job_id: str) -> int:
    async with c.runs.engine.connect() as conn:
        stmt = select(func.count()).select_from(run_events).where(run_events.c.job_id == job_id)
        return int((await conn.execute(stmt)).scalar_one())


async def test_a_job_born_queued_has_its_first_event_read_from_its_row(
    replica: Components,
) -> None:
    job = (await replica.dispatcher.enqueue("", spec())).job

    assert await _rows(replica, job.id) == 0
    assert await replica.runs.events_after({job.id: 0}) == [
        Transition(job.id, 1, JobState.QUEUED, 0, job.created_ms, "")
    ]
    assert await replica.runs.events_after({job.id: 1}) == []


async def test_a_job_born_scheduled_has_its_first_event_written(replica: Components) -> None:
    job = (await replica.dispatcher.enqueue("", spec(delay_ms=60_000))).job

    assert await _rows(replica, job.id) == 1
    assert await replica.runs.events_after({job.id: 0}) == [
        Transition(job.id, 1, JobState.SCHEDULED, 0, job.created_ms, "")
    ]


async def test_a_finished_job_reads_its_whole_history_in_version_order(
    replica: Components,
) -> None:
    job = (await replica.dispatcher.enqueue("", spec())).job
    (granted,) = await lease(replica)
    await ack(replica, granted.token, b"ok")

    history = await replica.runs.events_after({job.id: 0})

    assert [(e.version, e.state) for e in history] == [
        (1, JobState.QUEUED),
        (2, JobState.LEASED),
        (3, JobState.SUCCEEDED),
    ]
    assert await _rows(replica, job.id) == 2


async def test_a_first_event_row_written_before_is_read_once(replica: Components) -> None:
    # Jobs inserted by earlier code have a row for their QUEUED version 1.
    job = (await replica.dispatcher.enqueue("", spec())).job
    async with replica.runs.engine.begin() as conn:
        await conn.execute(
            insert(run_events).values(
                job_id=job.id, version=1, state="queued", attempt=0, at=job.created_ms, error=""
            )
        )

    assert await replica.runs.events_after({job.id: 0}) == [
        Transition(job.id, 1, JobState.QUEUED, 0, job.created_ms, "")
    ]


async def test_several_jobs_read_together_come_by_job_then_version(
    replica: Components,
) -> None:
    queued = (await replica.dispatcher.enqueue("", spec(queue="a"))).job
    scheduled = (await replica.dispatcher.enqueue("", spec(queue="b", delay_ms=60_000))).job
    (granted,) = await lease(replica, ["a"])
    unknown = "01J0000000000000000000000Z"  # no such job: nothing to imply

    history = await replica.runs.events_after({queued.id: 0, scheduled.id: 0, unknown: 0})

    expected = sorted(
        [
            (queued.id, 1, JobState.QUEUED),
            (queued.id, 2, JobState.LEASED),
            (scheduled.id, 1, JobState.SCHEDULED),
        ]
    )
    assert [(e.job_id, e.version, e.state) for e in history] == expected
    assert granted.job.id == queued.id
