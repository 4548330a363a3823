"""Leases expire and are fenced: a stale token changes nothing."""

from __future__ import annotations

import pytest

from dispatcher.app import Components
from dispatcher.clock import FakeClock
from dispatcher.domain.errors import InvalidArgument, JobNotFound, LeaseExpired
from dispatcher.domain.models import AckItem, HeartbeatItem, JobState, NackItem
from tests.service.helpers import ack, lease, nack, spec


async def test_a_lease_not_renewed_expires_and_the_job_is_delivered_again_with_a_new_token(
    replica: Components, clock: FakeClock
) -> None:
    job = (await replica.dispatcher.enqueue("", spec(lease_duration_ms=2000))).job
    (first,) = await lease(replica)
    assert first.job.attempt == 1
    clock.advance(1.9)
    assert (await replica.reaper.run_once(clock.now_ms())).expired == 0
    clock.advance(0.2)
    stats = await replica.reaper.run_once(clock.now_ms())
    assert stats.expired == 1
    (second,) = await lease(replica)
    assert second.job.id == job.id
    assert second.job.attempt == 2
    assert second.token != first.token


async def test_the_old_tokens_heartbeat_ack_and_nack_fail_and_change_nothing(
    replica: Components, clock: FakeClock
) -> None:
    await replica.dispatcher.enqueue("", spec(lease_duration_ms=2000))
    (old,) = await lease(replica)
    clock.advance(3)
    await replica.reaper.run_once(clock.now_ms())
    (new,) = await lease(replica, worker="w2")
    before = await replica.runs.get(new.job.id)
    with pytest.raises(LeaseExpired):
        await replica.dispatcher.heartbeat("", [HeartbeatItem(old.token)])
    with pytest.raises(LeaseExpired):
        await ack(replica, old.token, b"late")
    with pytest.raises(LeaseExpired):
        await nack(replica, old.token)
    assert await replica.runs.get(new.job.id) == before
    await ack(replica, new.token, b"B")
    done = await replica.runs.get(new.job.id)
    assert done is not None
    assert (done.state, done.result, done.attempt) == (JobState.SUCCEEDED, b"B", 2)


async def test_an_ack_after_expiry_but_before_the_reaper_runs_is_refused_and_the_job_runs_again(
    replica: Components, clock: FakeClock
) -> None:
    await replica.dispatcher.enqueue("", spec(lease_duration_ms=2000))
    (g,) = await lease(replica)
    clock.advance(2.5)
    with pytest.raises(LeaseExpired):
        await ack(replica, g.token)
    await replica.reaper.run_once(clock.now_ms())
    (again,) = await lease(replica)
    assert again.job.id == g.job.id


async def test_repeating_an_ack_with_the_current_token_is_harmless(replica: Components) -> None:
    await replica.dispatcher.enqueue("", spec())
    (g,) = await lease(replica)
    await ack(replica, g.token, b"r1")
    after_first = await replica.runs.get(g.job.id)
    await ack(replica, g.token, b"r2")
    assert await replica.runs.get(g.job.id) == after_first


async def test_a_heartbeat_sets_the_expiry_to_now_plus_the_duration_and_keeps_the_job(
    replica: Components, clock: FakeClock
) -> None:
    await replica.dispatcher.enqueue("", spec(lease_duration_ms=2000))
    (g,) = await lease(replica)
    for _ in range(5):
        clock.advance(1.5)
        (ext,) = await replica.dispatcher.heartbeat("", [HeartbeatItem(g.token, 40.0, "half")])
        assert ext.expire_ms == clock.now_ms() + 2000  # type: ignore[union-attr]
        assert (await replica.reaper.run_once(clock.now_ms())).expired == 0
    job = await replica.runs.get(g.job.id)
    assert job is not None
    assert (job.state, job.attempt, job.progress_percent, job.progress_message) == (
        JobState.LEASED,
        1,
        40.0,
        "half",
    )


async def test_a_token_repeated_in_one_heartbeat_call_is_applied_in_order(
    replica: Components, clock: FakeClock
) -> None:
    await replica.dispatcher.enqueue("", spec(lease_duration_ms=2000))
    (g,) = await lease(replica)
    items = [HeartbeatItem(g.token, 10.0, "first", 5000), HeartbeatItem(g.token, 20.0, "second")]
    first, second = await replica.dispatcher.heartbeat("", items)
    assert first.expire_ms == clock.now_ms() + 5000  # type: ignore[union-attr]
    assert second.expire_ms == clock.now_ms() + 2000  # type: ignore[union-attr]
    job = await replica.runs.get(g.job.id)
    assert job is not None
    assert (job.progress_percent, job.progress_message, job.lease_expires_ms) == (
        20.0,
        "second",
        clock.now_ms() + 2000,
    )
    (ok,) = await replica.dispatcher.ack("", [AckItem(g.token, b"done")])
    assert ok.state is JobState.SUCCEEDED  # type: ignore[union-attr]


async def test_a_heartbeat_after_ack_is_refused(replica: Components) -> None:
    await replica.dispatcher.enqueue("", spec())
    (g,) = await lease(replica)
    await ack(replica, g.token)
    with pytest.raises(LeaseExpired):
        await replica.dispatcher.heartbeat("", [HeartbeatItem(g.token)])


async def test_a_batch_reports_each_item_and_applies_the_good_ones(replica: Components) -> None:
    await replica.dispatcher.enqueue_batch("", [spec(), spec()])
    g1, g2 = await lease(replica, n=2)
    await ack(replica, g2.token)
    results = await replica.dispatcher.ack(
        "", [AckItem(g1.token, b"ok"), AckItem(g2.token), AckItem("garbage")]
    )
    assert results[0].state is JobState.SUCCEEDED  # type: ignore[union-attr]
    assert results[1].state is JobState.SUCCEEDED  # type: ignore[union-attr]
    assert isinstance(results[2], InvalidArgument)


async def test_a_well_formed_token_for_an_unknown_job_is_not_found(replica: Components) -> None:
    token = "01M83HEKD3AA16Q5HS2VATHPWR." + "0" * 32
    with pytest.raises(JobNotFound):
        await replica.dispatcher.ack("", [AckItem(token)])


async def test_a_token_is_not_usable_from_another_namespace(replica: Components) -> None:
    await replica.dispatcher.enqueue("", spec())
    (g,) = await lease(replica)
    with pytest.raises(JobNotFound):
        await replica.dispatcher.ack("other", [AckItem(g.token)])
    with pytest.raises(JobNotFound):
        await replica.dispatcher.nack("other", [NackItem(g.token)])


async def test_a_job_reaches_a_terminal_state_exactly_once_under_racing_acks(
    replica: Components, clock: FakeClock
) -> None:
    import asyncio

    await replica.dispatcher.enqueue("", spec(lease_duration_ms=1000))
    (old,) = await lease(replica)
    clock.advance(2)
    await replica.reaper.run_once(clock.now_ms())
    (new,) = await lease(replica)
    outcomes = await asyncio.gather(
        ack(replica, old.token, b"A"), ack(replica, new.token, b"B"), return_exceptions=True
    )
    assert isinstance(outcomes[0], LeaseExpired)
    assert outcomes[1] is None
    job = await replica.runs.get(new.job.id)
    assert job is not None and job.result == b"B"
    states = [e.state for e in await replica.runs.events_after({job.id: 0})]
    assert states.count(JobState.SUCCEEDED) == 1


async def test_a_nack_with_a_token_whose_lease_expired_is_refused_before_any_new_lease(
    replica: Components, clock: FakeClock
) -> None:
    job = (await replica.dispatcher.enqueue("", spec(lease_duration_ms=1000))).job
    (g,) = await lease(replica)
    clock.advance(2)
    await replica.reaper.run_once(clock.now_ms())
    before = await replica.runs.get(job.id)
    assert before is not None and before.state is JobState.QUEUED
    with pytest.raises(LeaseExpired):
        await nack(replica, g.token)
    after = await replica.runs.get(job.id)
    assert after == before
