"""Cancel: waiting jobs at once; leased jobs through their worker; never a late success."""

from __future__ import annotations

import pytest

from dispatcher.app import Components
from dispatcher.clock import FakeClock
from dispatcher.domain.errors import InvalidTransition, JobCancelled, JobNotFound
from dispatcher.domain.models import HeartbeatItem, JobState, TerminalReason
from tests.service.helpers import ack, lease, nack, spec


async def test_a_queued_or_scheduled_job_is_cancelled_at_once_and_never_leased(
    replica: Components,
) -> None:
    queued = (await replica.dispatcher.enqueue("", spec())).job
    later = (await replica.dispatcher.enqueue("", spec(delay_ms=1000))).job
    for job in (queued, later):
        out = await replica.dispatcher.cancel("", job.id, "not needed")
        assert (out.state, out.terminal_reason, out.last_error) == (
            JobState.CANCELLED,
            TerminalReason.CANCELLED,
            "not needed",
        )
    assert await lease(replica, n=10) == []
    assert await replica.index.depth("default", "q") == (0, 0, 0)


async def test_a_leased_job_learns_of_its_cancellation_in_the_next_heartbeat(
    replica: Components,
) -> None:
    job = (await replica.dispatcher.enqueue("", spec())).job
    (g,) = await lease(replica)
    marked = await replica.dispatcher.cancel("", job.id, "")
    assert (marked.state, marked.cancel_requested) == (JobState.LEASED, True)
    (ext,) = await replica.dispatcher.heartbeat("", [HeartbeatItem(g.token)])
    assert ext.cancel_requested  # type: ignore[union-attr]
    with pytest.raises(JobCancelled):
        await ack(replica, g.token)
    await nack(replica, g.token, error="stopped")
    done = await replica.runs.get(job.id)
    assert done is not None
    assert (done.state, done.terminal_reason) == (JobState.CANCELLED, TerminalReason.CANCELLED)


async def test_a_cancelled_lease_that_expires_ends_cancelled_not_retried(
    replica: Components, clock: FakeClock
) -> None:
    job = (await replica.dispatcher.enqueue("", spec(lease_duration_ms=1000, max_attempts=5))).job
    await lease(replica)
    await replica.dispatcher.cancel("", job.id, "")  # no worker will ever hear of it
    clock.advance(2)
    await replica.reaper.run_once(clock.now_ms())
    done = await replica.runs.get(job.id)
    assert done is not None and done.state is JobState.CANCELLED
    assert await lease(replica) == []


async def test_cancelling_twice_is_harmless_and_a_finished_job_cannot_be_cancelled(
    replica: Components,
) -> None:
    a = (await replica.dispatcher.enqueue("", spec())).job
    first = await replica.dispatcher.cancel("", a.id, "")
    assert await replica.dispatcher.cancel("", a.id, "") == first
    await replica.dispatcher.enqueue("", spec())
    (g,) = await lease(replica)
    await ack(replica, g.token)
    with pytest.raises(InvalidTransition):
        await replica.dispatcher.cancel("", g.job.id, "")
    with pytest.raises(JobNotFound):
        await replica.dispatcher.cancel("elsewhere", a.id, "")
