"""Dependencies, start deadlines, maximum run time, retention, and why a job waits."""

from __future__ import annotations

import pytest

from dispatcher.app import Components
from dispatcher.clock import FakeClock
from dispatcher.domain.errors import InvalidArgument, LeaseExpired
from dispatcher.domain.models import HeartbeatItem, JobState, TerminalReason
from dispatcher.service.retention import RetentionSweeper
from tests.service.helpers import ack, lease, nack, spec


async def test_a_job_waits_for_all_its_dependencies_and_then_runs(replica: Components) -> None:
    d = replica.dispatcher
    a = (await d.enqueue("", spec(queue="a"))).job
    b = (await d.enqueue("", spec(queue="a"))).job
    child = (await d.enqueue("", spec(queue="c", depends_on=[a.id, b.id]))).job
    assert child.state is JobState.WAITING
    assert (await d.get("", child.id)).wait_reason.startswith("waiting for 2 dependencies")
    ga, gb = await lease(replica, queues=["a"], n=2)
    await ack(replica, ga.token)
    assert await lease(replica, queues=["c"]) == []
    await ack(replica, gb.token)
    (gc,) = await lease(replica, queues=["c"])
    assert gc.job.id == child.id


async def test_a_waiting_job_takes_no_place_in_the_ready_index_until_it_is_released(
    replica: Components,
) -> None:
    d = replica.dispatcher
    parent = (await d.enqueue("", spec(queue="a"))).job
    await d.enqueue("", spec(queue="c", depends_on=[parent.id]))
    ready = replica.index.keys.ready("default", "c")
    assert await replica.index.client.zcard(ready) == 0
    (g,) = await lease(replica, queues=["a"])
    await ack(replica, g.token)
    assert await replica.index.client.zcard(ready) == 1


async def test_a_failed_dependency_cancels_its_dependents_transitively_with_the_reason(
    replica: Components,
) -> None:
    d = replica.dispatcher
    root = (await d.enqueue("", spec(queue="a", max_attempts=1))).job
    mid = (await d.enqueue("", spec(queue="b", depends_on=[root.id]))).job
    leaf = (await d.enqueue("", spec(queue="b", depends_on=[mid.id]))).job
    (g,) = await lease(replica, queues=["a"])
    await nack(replica, g.token, error="boom")
    for job_id in (mid.id, leaf.id):
        job = await d.get("", job_id)
        assert (job.state, job.terminal_reason) == (
            JobState.CANCELLED,
            TerminalReason.DEPENDENCY_FAILED,
        )
    assert "ended dead_lettered" in (await d.get("", mid.id)).last_error
    late = (await d.enqueue("", spec(queue="b", depends_on=[root.id]))).job
    assert late.state is JobState.CANCELLED  # born cancelled: its dependency already failed


async def test_depending_on_a_finished_or_unknown_job(replica: Components) -> None:
    d = replica.dispatcher
    await d.enqueue("", spec(queue="a"))
    (g,) = await lease(replica, queues=["a"])
    await ack(replica, g.token)
    ready = (await d.enqueue("", spec(depends_on=[g.job.id]))).job
    assert ready.state is JobState.QUEUED
    with pytest.raises(InvalidArgument) as info:
        await d.enqueue("", spec(depends_on=["01M83HEKD3AA16Q5HS2VATHPWR"]))
    assert info.value.violations[0].field == "job.depends_on[0]"
    with pytest.raises(InvalidArgument):
        await d.enqueue("other-ns", spec(depends_on=[g.job.id]))


async def test_a_job_not_leased_before_its_start_deadline_expires_unrun(
    replica: Components, clock: FakeClock
) -> None:
    d = replica.dispatcher
    swept = (await d.enqueue("", spec(queue="p", start_within_ms=5000))).job
    lazy = (await d.enqueue("", spec(queue="q", start_within_ms=5000))).job
    await replica.queues.pause("", "p")  # nobody can lease it: the reaper must expire it
    clock.advance(6)
    assert await lease(replica) == []  # the lease path expires `lazy` instead of running it
    stats = await replica.reaper.run_once(clock.now_ms())
    assert stats.deadline_expired == 1
    for job_id in (swept.id, lazy.id):
        job = await d.get("", job_id)
        assert (job.state, job.terminal_reason, job.attempt) == (
            JobState.DEAD_LETTERED,
            TerminalReason.START_DEADLINE_EXCEEDED,
            0,
        )


async def test_an_attempt_cannot_outlive_its_max_run_time_even_with_heartbeats(
    replica: Components, clock: FakeClock
) -> None:
    d = replica.dispatcher
    job = (await d.enqueue("", spec(lease_duration_ms=2000, max_run_ms=5000, max_attempts=3))).job
    (g,) = await lease(replica)
    for _ in range(3):
        clock.advance(1.5)
        await d.heartbeat("", [HeartbeatItem(g.token)])
    clock.advance(1.0)  # 5.5 s after the start: the lease was capped at 5 s
    with pytest.raises(LeaseExpired):
        await d.heartbeat("", [HeartbeatItem(g.token)])
    await replica.reaper.run_once(clock.now_ms())
    done = await d.get("", job.id)
    assert (done.state, done.terminal_reason) == (
        JobState.DEAD_LETTERED,
        TerminalReason.RUN_TIME_EXCEEDED,
    )


async def test_finished_jobs_are_deleted_after_the_retention_period_in_batches(
    replica: Components, clock: FakeClock
) -> None:
    d = replica.dispatcher
    await d.enqueue_batch("", [spec()] * 7)
    for g in await lease(replica, n=7):
        await ack(replica, g.token)
    waiting = (await d.enqueue("", spec())).job  # never finishes: never deleted
    sweeper = RetentionSweeper(replica.runs, retention_ms=3_600_000, batch=3)
    clock.advance(3599)
    assert (await sweeper.run_once(clock.now_ms())).jobs == 0
    clock.advance(2)
    assert (await sweeper.run_once(clock.now_ms())).jobs == 7
    assert await replica.runs.count_by_state() == {"queued": 1}
    assert (await d.get("", waiting.id)).state is JobState.QUEUED
    assert await replica.runs.events_after({g: 0 for g in [waiting.id]}) != []


async def test_a_job_retried_by_an_operator_during_a_sweep_is_not_deleted(
    replica: Components, clock: FakeClock
) -> None:
    d = replica.dispatcher
    job = (await d.enqueue("", spec(max_attempts=1))).job
    (g,) = await lease(replica)
    await nack(replica, g.token, retry=False)
    clock.advance(7200)
    sweeper = RetentionSweeper(replica.runs, retention_ms=3_600_000)
    picked = replica.runs.finished_before

    async def pick_then_operator_retries(cutoff_ms: int, limit: int) -> list[str]:
        ids = await picked(cutoff_ms, limit)
        await replica.admin.retry_dead_lettered("default", job.id, "")  # the race
        return ids

    replica.runs.finished_before = pick_then_operator_retries  # type: ignore[method-assign]
    assert (await sweeper.run_once(clock.now_ms())).jobs == 0
    assert (await d.get("", job.id)).state is JobState.QUEUED
