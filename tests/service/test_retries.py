"""Retries follow the backoff policy; dead-lettering comes after exactly max_attempts."""

from __future__ import annotations

import random

import pytest

from dispatcher.app import Components
from dispatcher.clock import FakeClock
from dispatcher.domain import transitions
from dispatcher.domain.errors import LeaseExpired
from dispatcher.domain.models import JobState, RetryPolicy
from tests.service.helpers import NO_JITTER, lease, nack, spec


async def _fail_until_dead(c: Components, clock: FakeClock, job_id: str) -> list[int]:
    """Nack every attempt, advancing the clock by exactly the backoff; return the gaps (ms)."""
    gaps: list[int] = []
    while True:
        granted = await lease(c)
        if not granted:
            job = await c.runs.get(job_id)
            assert job is not None
            if job.state is JobState.DEAD_LETTERED:
                return gaps
            gap = job.run_at_ms - clock.now_ms()
            gaps.append(gap)
            # One millisecond early is still too early.
            clock.advance((gap - 1) / 1000)
            await c.reaper.run_once(clock.now_ms())
            assert await lease(c) == []
            clock.advance(0.001)
            await c.reaper.run_once(clock.now_ms())
            continue
        await nack(c, granted[0].token, error=f"attempt {granted[0].job.attempt}")


async def test_retries_wait_the_exponential_backoff_and_dead_letter_after_max_attempts(
    replica: Components, clock: FakeClock
) -> None:
    job = (await replica.dispatcher.enqueue("", spec(max_attempts=5, retry_policy=NO_JITTER))).job
    gaps = await _fail_until_dead(replica, clock, job.id)
    assert gaps == [1000, 2000, 4000, 8000]
    dead = await replica.runs.get(job.id)
    assert dead is not None
    assert (dead.state, dead.attempt, dead.last_error) == (JobState.DEAD_LETTERED, 5, "attempt 5")


async def test_backoff_is_capped_at_max_backoff(replica: Components, clock: FakeClock) -> None:
    policy = RetryPolicy(initial_backoff_ms=1000, max_backoff_ms=3000, multiplier=3.0, jitter=0.0)
    job = (await replica.dispatcher.enqueue("", spec(max_attempts=4, retry_policy=policy))).job
    assert await _fail_until_dead(replica, clock, job.id) == [1000, 3000, 3000]


async def test_a_nack_without_retry_dead_letters_at_once(replica: Components) -> None:
    job = (await replica.dispatcher.enqueue("", spec(max_attempts=5))).job
    (g,) = await lease(replica)
    await nack(replica, g.token, error="bad input", retry=False)
    dead = await replica.runs.get(job.id)
    assert dead is not None
    assert (dead.state, dead.attempt, dead.last_error) == (JobState.DEAD_LETTERED, 1, "bad input")


async def test_an_explicit_retry_after_overrides_the_backoff(
    replica: Components, clock: FakeClock
) -> None:
    job = (await replica.dispatcher.enqueue("", spec(retry_policy=NO_JITTER))).job
    (g,) = await lease(replica)
    await nack(replica, g.token, retry_after_ms=30_000)
    row = await replica.runs.get(job.id)
    assert row is not None
    assert (row.state, row.run_at_ms) == (JobState.SCHEDULED, clock.now_ms() + 30_000)


async def test_a_retry_after_of_zero_makes_the_job_ready_at_once(replica: Components) -> None:
    await replica.dispatcher.enqueue("", spec())
    (g,) = await lease(replica)
    await nack(replica, g.token, retry_after_ms=0)
    (again,) = await lease(replica)
    assert again.job.attempt == 2


async def test_lease_expiry_counts_as_an_attempt_and_dead_letters_after_the_last(
    replica: Components, clock: FakeClock
) -> None:
    job = (await replica.dispatcher.enqueue("", spec(max_attempts=2, lease_duration_ms=1000))).job
    for _ in range(2):
        assert len(await lease(replica)) == 1
        clock.advance(1.5)
        await replica.reaper.run_once(clock.now_ms())
    row = await replica.runs.get(job.id)
    assert row is not None
    assert (row.state, row.attempt) == (JobState.DEAD_LETTERED, 2)
    assert row.last_error == transitions.LEASE_EXPIRED_ERROR


def test_jitter_stays_within_its_fraction_of_the_delay() -> None:
    policy = RetryPolicy(
        initial_backoff_ms=1000, max_backoff_ms=100_000, multiplier=2.0, jitter=0.2
    )
    rng = random.Random(7)
    for attempt in range(1, 6):
        base = 1000 * 2 ** (attempt - 1)
        samples = [transitions.backoff_ms(policy, attempt, rng) for _ in range(200)]
        assert all(0.8 * base <= s <= 1.2 * base for s in samples)
        assert max(samples) - min(samples) > 0.2 * base  # it does spread


def test_a_huge_attempt_number_does_not_overflow_the_backoff() -> None:
    assert transitions.backoff_ms(NO_JITTER, 10_000, random.Random()) == NO_JITTER.max_backoff_ms


async def test_a_released_job_is_queued_at_once_without_using_up_an_attempt(
    replica: Components,
) -> None:
    job = (await replica.dispatcher.enqueue("", spec(max_attempts=1))).job
    (g,) = await lease(replica)
    await nack(replica, g.token, error="worker shutting down", release=True)
    row = await replica.runs.get(job.id)
    assert row is not None
    assert (row.state, row.attempt, row.last_error) == (
        JobState.QUEUED,
        0,
        "worker shutting down",
    )
    (again,) = await lease(replica)  # max_attempts=1, yet it runs: the release did not count
    assert (again.job.id, again.job.attempt) == (job.id, 1)
    with pytest.raises(LeaseExpired):
        await nack(replica, g.token, release=True)  # the old token is void


async def test_releasing_a_job_whose_cancellation_was_requested_cancels_it(
    replica: Components,
) -> None:
    job = (await replica.dispatcher.enqueue("", spec())).job
    (g,) = await lease(replica)
    await replica.dispatcher.cancel("", job.id, "not needed")
    await nack(replica, g.token, release=True)
    row = await replica.runs.get(job.id)
    assert row is not None and row.state is JobState.CANCELLED
