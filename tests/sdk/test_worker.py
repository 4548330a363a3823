"""The Worker against a real dispatcher on each backend. The server's clock is fake, so a
lease only expires when a test advances it; the worker's own timers run for real."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import grpc
import pytest

from dispatcher.app import DispatcherApp
from dispatcher.clock import FakeClock
from worker_sdk import (
    Client,
    ConnectOptions,
    Enqueued,
    Job,
    JobContext,
    JobOptions,
    JobRequest,
    JobState,
    NonRetryable,
    Retry,
    TerminalReason,
    Worker,
    WorkerOptions,
    _lease,
)

QUICK = WorkerOptions(
    queues=("q",),
    concurrency=3,
    lease_duration=timedelta(seconds=1),  # heartbeats every third of a second
    poll_wait=timedelta(seconds=1),
    shutdown_grace=timedelta(milliseconds=200),
)


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 30) -> None:
    async with asyncio.timeout(timeout_s):
        while not await check():
            await asyncio.sleep(0.02)


async def state_is(client: Client, job_id: str, state: JobState) -> Job:
    job: Job | None = None

    async def reached() -> bool:
        nonlocal job
        job = await client.get(job_id)
        return job.state is state

    await until(reached, f"{job_id} {state}")
    assert job is not None
    return job


@pytest.fixture
async def worker(connect: ConnectOptions) -> AsyncIterator[Worker]:
    w = Worker(QUICK, connect)
    yield w
    await w.stop()


async def test_a_handlers_return_value_becomes_the_result(worker: Worker, client: Client) -> None:
    @worker.handler("add")
    async def add(job: JobContext) -> dict[str, int]:
        return {"sum": job.json()["a"] + job.json()["b"]}

    await worker.start()
    job = await client.enqueue("q", "add", {"a": 1, "b": 2})
    done = await client.result(job.id, timeout=timedelta(seconds=30))
    assert (done.result_json(), done.attempt, done.result_content_type) == (
        {"sum": 3},
        1,
        "application/json",
    )


async def test_a_plain_function_runs_in_a_thread_and_its_progress_reaches_the_job(
    worker: Worker, client: Client
) -> None:
    release = threading.Event()
    threads: list[str] = []

    @worker.handler("resize")
    def resize(job: JobContext) -> bytes:
        threads.append(threading.current_thread().name)
        job.progress(40, "scaling")
        release.wait(30)
        return b"done"

    await worker.start()
    job = await client.enqueue("q", "resize")

    async def progress_shown() -> bool:
        return (await client.get(job.id)).progress.percent == 40

    await until(progress_shown, "progress")
    assert (await client.get(job.id)).progress.message == "scaling"
    release.set()
    done = await client.result(job.id, timeout=timedelta(seconds=30))
    assert done.result == b"done"
    assert threads[0].startswith("worker-handler")


async def test_a_lease_due_sooner_than_those_held_is_renewed_in_time(
    connect: ConnectOptions, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each job keeps its own lease duration: a job leased for an hour is held
    # (its renewal planned 20 minutes on), then one leased for a second arrives.
    # A worker holding nothing looks again every IDLE_TICK_S: shortened, so that
    # the hour-long lease is planned for well before the second job arrives.
    monkeypatch.setattr(_lease, "IDLE_TICK_S", 0.05)
    worker = Worker(replace(QUICK, lease_duration=None), connect)
    release = asyncio.Event()

    @worker.handler("hold")
    async def hold(job: JobContext) -> None:
        job.progress(float(job.json()["percent"]))  # sent with the next heartbeat
        await release.wait()

    try:
        await worker.start()
        hour = await client.enqueue(
            "q", "hold", {"percent": 10}, JobOptions(lease_duration=timedelta(hours=1))
        )
        await state_is(client, hour.id, JobState.LEASED)
        await asyncio.sleep(0.3)  # six idle ticks: the 20-minute renewal is planned
        second = await client.enqueue(
            "q", "hold", {"percent": 20}, JobOptions(lease_duration=timedelta(seconds=1))
        )

        async def short_lease_renewed() -> bool:
            return (await client.get(second.id)).progress.percent == 20

        await until(short_lease_renewed, "the one-second lease renewed")
        # One call renews every lease held: the hour-long one went with it, 20 minutes early.
        assert (await client.get(hour.id)).progress.percent == 10
    finally:
        release.set()
        await worker.stop()


async def test_a_lease_whose_ack_is_on_its_way_is_not_renewed_nor_reported_lost(
    worker: Worker, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    # The Ack reaches the server and commits, but its reply is held back from
    # the worker; meanwhile another job's lease is renewed every third of a
    # second. A renewal of the acked lease would be refused (the job is over)
    # and was taken for a lost lease whose result would never be sent.
    finish, ack_landed, reply_held = asyncio.Event(), asyncio.Event(), asyncio.Event()
    renewed: list[list[str]] = []  # the lease tokens of each Heartbeat call

    @worker.handler("quick")
    async def quick(job: JobContext) -> str:
        return "done"

    @worker.handler("hold")
    async def hold(job: JobContext) -> None:
        await finish.wait()

    await worker.start()
    stub = worker._client.raw  # type: ignore[union-attr]  # the worker's own channel
    ack, heartbeat = stub.Ack, stub.Heartbeat

    async def ack_with_reply_held(request: Any, **kw: Any) -> Any:
        reply = await ack(request, **kw)
        ack_landed.set()
        await reply_held.wait()
        return reply

    async def recorded_heartbeat(request: Any, **kw: Any) -> Any:
        renewed.append([item.lease_token for item in request.items])
        return await heartbeat(request, **kw)

    stub.Ack, stub.Heartbeat = ack_with_reply_held, recorded_heartbeat
    try:
        holder = await client.enqueue("q", "hold", {})
        await state_is(client, holder.id, JobState.LEASED)
        job = await client.enqueue("q", "quick", {})
        await asyncio.wait_for(ack_landed.wait(), 30)
        await state_is(client, job.id, JobState.SUCCEEDED)
        since = len(renewed)
        await until(lambda: _true_if(len(renewed) >= since + 2), "two more heartbeats")
        later = [token for call in renewed[since:] for token in call]
        assert any(token.startswith(holder.id) for token in later)
        assert not any(token.startswith(job.id) for token in later)
    finally:
        reply_held.set()
        finish.set()
    assert "lost" not in caplog.text


async def test_a_lease_whose_ack_failed_is_renewed_until_the_ack_goes_through(
    worker: Worker, client: Client
) -> None:
    # Every Ack fails (UNAVAILABLE) until a Heartbeat has renewed the job's
    # lease: an outcome call that failed gives its lease back to the renewals.
    renewed: list[str] = []

    @worker.handler("quick")
    async def quick(job: JobContext) -> str:
        return "done"

    await worker.start()
    stub = worker._client.raw  # type: ignore[union-attr]  # the worker's own channel
    ack, heartbeat = stub.Ack, stub.Heartbeat
    refused = 0

    async def ack_after_a_renewal(request: Any, **kw: Any) -> Any:
        nonlocal refused
        if not any(item.lease_token in renewed for item in request.items):
            refused += 1
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down"
            )
        return await ack(request, **kw)

    async def recorded_heartbeat(request: Any, **kw: Any) -> Any:
        renewed.extend(item.lease_token for item in request.items)
        return await heartbeat(request, **kw)

    stub.Ack, stub.Heartbeat = ack_after_a_renewal, recorded_heartbeat
    job = await client.enqueue("q", "quick", {})
    done = await client.result(job.id, timeout=timedelta(seconds=30))
    assert done.result_json() == "done"
    assert refused >= 1
    assert any(token.startswith(job.id) for token in renewed)


async def test_an_exception_fails_the_attempt_and_the_job_is_retried(
    worker: Worker, client: Client
) -> None:
    @worker.handler("flaky")
    async def flaky(job: JobContext) -> None:
        raise ConnectionError("smtp down")

    await worker.start()
    job = await client.enqueue("q", "flaky", {}, JobOptions(max_attempts=3))
    retried = await state_is(client, job.id, JobState.SCHEDULED)
    assert retried.attempt == 1
    assert retried.last_error.startswith("ConnectionError: smtp down")
    assert "Traceback" in retried.last_error


async def test_the_last_attempt_failing_dead_letters_the_job(
    worker: Worker, client: Client
) -> None:
    @worker.handler("flaky")
    async def flaky(job: JobContext) -> None:
        raise ConnectionError("smtp down")

    await worker.start()
    job = await client.enqueue("q", "flaky", {}, JobOptions(max_attempts=1))
    dead = await state_is(client, job.id, JobState.DEAD_LETTERED)
    assert dead.terminal_reason is TerminalReason.ATTEMPTS_EXHAUSTED


async def test_a_non_retryable_exception_dead_letters_at_once(
    worker: Worker, client: Client
) -> None:
    @worker.handler("parse", non_retryable=(ValueError,))
    async def parse(job: JobContext) -> None:
        raise ValueError("not a number")

    @worker.handler("reject")
    async def reject(job: JobContext) -> None:
        raise NonRetryable("bad input")

    await worker.start()
    for job_type in ("parse", "reject"):
        job = await client.enqueue("q", job_type, {}, JobOptions(max_attempts=5))
        dead = await state_is(client, job.id, JobState.DEAD_LETTERED)
        assert (dead.attempt, dead.terminal_reason) == (1, TerminalReason.NOT_RETRYABLE)


async def test_raising_retry_chooses_when_the_next_attempt_runs(
    worker: Worker, client: Client, clock: FakeClock
) -> None:
    @worker.handler("later")
    async def later(job: JobContext) -> None:
        raise Retry("rate limited upstream", after=timedelta(seconds=30))

    await worker.start()
    job = await client.enqueue("q", "later", {})
    retried = await state_is(client, job.id, JobState.SCHEDULED)
    assert retried.next_run_at is not None
    assert retried.next_run_at.timestamp() * 1000 == clock.now_ms() + 30_000


async def test_a_job_type_without_a_handler_is_failed_for_another_worker_to_take(
    worker: Worker, client: Client
) -> None:
    @worker.handler("known")
    async def known(job: JobContext) -> None:
        return None

    await worker.start()
    job = await client.enqueue("q", "unknown", {}, JobOptions(max_attempts=2))
    failed = await state_is(client, job.id, JobState.SCHEDULED)
    assert "no handler for job type 'unknown'" in failed.last_error


async def test_at_most_concurrency_jobs_run_at_once_and_all_complete(
    worker: Worker, client: Client
) -> None:
    running, peak = 0, 0

    @worker.handler("work")
    async def work(job: JobContext) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1

    queued = await client.enqueue_many([JobRequest("q", "work", {"i": i}) for i in range(12)])
    await worker.start()
    for result in queued:
        assert isinstance(result, Enqueued)
        await state_is(client, result.job.id, JobState.SUCCEEDED)
    assert peak == QUICK.concurrency


async def test_a_lost_lease_cancels_the_handler_and_the_job_runs_again(
    worker: Worker, client: Client, app: DispatcherApp, clock: FakeClock
) -> None:
    calls: list[str] = []

    @worker.handler("slow")
    async def slow(job: JobContext) -> str:
        calls.append(f"start {job.attempt}")
        if job.attempt == 1:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                calls.append("cancelled 1")
                raise
        return "second time lucky"

    await worker.start()
    job = await client.enqueue("q", "slow", {})
    await state_is(client, job.id, JobState.LEASED)
    clock.advance(5)  # past the one-second lease: the dispatcher takes the job back
    await app.components.reaper.run_once(clock.now_ms())
    done = await client.result(job.id, timeout=timedelta(seconds=30))
    assert (done.attempt, done.result_json()) == (2, "second time lucky")
    await until(lambda: _true_if("cancelled 1" in calls), "the first handler cancelled")
    assert sorted(calls) == ["cancelled 1", "start 1", "start 2"]


async def test_cancelling_a_running_job_cancels_its_handler_and_the_job_ends_cancelled(
    worker: Worker, client: Client
) -> None:
    cancelled = asyncio.Event()

    @worker.handler("slow")
    async def slow(job: JobContext) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    await worker.start()
    job = await client.enqueue("q", "slow", {})
    await state_is(client, job.id, JobState.LEASED)
    await client.cancel(job.id, "customer left")
    await asyncio.wait_for(cancelled.wait(), 30)
    ended = await state_is(client, job.id, JobState.CANCELLED)
    assert ended.terminal_reason is TerminalReason.CANCELLED


async def test_stopping_gives_back_unfinished_jobs_at_once_without_using_an_attempt(
    worker: Worker, client: Client
) -> None:
    @worker.handler("slow")
    async def slow(job: JobContext) -> None:
        await asyncio.sleep(3600)

    await worker.start()
    job = await client.enqueue("q", "slow", {}, JobOptions(max_attempts=1))
    await state_is(client, job.id, JobState.LEASED)
    await worker.stop()
    back = await client.get(job.id)
    assert (back.state, back.attempt) == (JobState.QUEUED, 0)


async def _true_if(value: bool) -> bool:
    return value


# ---- leasing ahead ---------------------------------------------------------------
#
# A job that finishes while a Lease call is out lets the next calls take one more
# than the free slots: it waits, leased, for a slot. Each scenario below makes one
# job finish during a long-poll, then enqueues jobs that each wait at a gate.


class _Gates:
    """One gate per job a handler waits at; `open_all` opens those to come too."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self._all_open = False

    def of(self, job_id: str) -> asyncio.Event:
        event = self._events.setdefault(job_id, asyncio.Event())
        if self._all_open:
            event.set()
        return event

    def open_all(self) -> None:
        self._all_open = True
        for event in self._events.values():
            event.set()


@dataclass
class _Scene:
    worker: Worker
    client: Client
    ids: list[str]  # the gated jobs, in the order enqueued
    started: list[str]  # those whose handlers started, in that order
    gates: _Gates

    async def leased(self) -> int:
        return sum([(await self.client.get(i)).state is JobState.LEASED for i in self.ids])

    async def until_leased(self, n: int, what: str) -> None:
        async def reached() -> bool:
            return await self.leased() == n

        await until(reached, what)

    async def until_one_waits(self) -> str:
        """Wait until two handlers run and a third job is leased; return the third's id."""
        await self.until_leased(3, "two running and one leased ahead")
        await until(lambda: _true_if(len(self.started) == 2), "two handlers started")
        states = {i: (await self.client.get(i)).state for i in self.ids}
        waiting = [i for i in self.ids if states[i] is JobState.LEASED and i not in self.started]
        assert len(waiting) == 1
        return waiting[0]

    async def all_succeed(self, ids: list[str] | None = None) -> None:
        self.gates.open_all()
        for job_id in self.ids if ids is None else ids:
            await state_is(self.client, job_id, JobState.SUCCEEDED)


@asynccontextmanager
async def _one_finished_during_a_long_poll(
    connect: ConnectOptions, client: Client, options: WorkerOptions = QUICK, gated: int = 4
) -> AsyncIterator[_Scene]:
    """A worker of concurrency 2 whose first job finished while its next Lease
    waited, and `gated` jobs enqueued after that; stopped on the way out."""
    worker = Worker(replace(options, concurrency=2), connect)
    first_may_end = asyncio.Event()
    scene = _Scene(worker, client, [], [], _Gates())

    @worker.handler("first")
    async def first(job: JobContext) -> None:
        await first_may_end.wait()

    @worker.handler("gated")
    async def gated_job(job: JobContext) -> None:
        scene.started.append(job.id)
        await scene.gates.of(job.id).wait()

    await worker.start()
    try:
        one = await client.enqueue("q", "first", {})
        await state_is(client, one.id, JobState.LEASED)  # the worker's next Lease now waits
        first_may_end.set()
        await state_is(client, one.id, JobState.SUCCEEDED)  # finished while that call was out
        jobs = [JobRequest("q", "gated", {"i": i}) for i in range(gated)]
        scene.ids = [r.job.id for r in await client.enqueue_many(jobs) if isinstance(r, Enqueued)]
        yield scene
    finally:
        scene.gates.open_all()
        await worker.stop()


async def test_a_job_finishing_during_a_lease_call_lets_the_next_take_one_ahead_to_wait(
    connect: ConnectOptions, client: Client
) -> None:
    async with _one_finished_during_a_long_poll(connect, client) as scene:
        await scene.until_one_waits()
        assert await scene.leased() == 3  # and the fourth still queued
        assert len(scene.started) == 2  # concurrency still bounds the handlers
        await scene.all_succeed()


async def test_a_worker_still_leases_ahead_after_a_call_that_saw_nothing_finish(
    connect: ConnectOptions, client: Client
) -> None:
    async with _one_finished_during_a_long_poll(connect, client, gated=5) as scene:
        waiting = await scene.until_one_waits()
        # Nothing finished during the call that took it ahead; one job did during
        # the call before. When a running job ends, the waiting one takes its slot
        # and the worker leases one more ahead.
        scene.gates.of(scene.started[0]).set()
        await state_is(client, scene.started[0], JobState.SUCCEEDED)
        await until(lambda: _true_if(waiting in scene.started), "the waiting job started")
        await scene.until_leased(3, "another job leased ahead")
        assert len(scene.started) == 3  # the two running and the one that finished
        await scene.all_succeed()


async def test_a_job_leased_ahead_is_given_back_at_once_on_stop_without_using_an_attempt(
    connect: ConnectOptions, client: Client
) -> None:
    async with _one_finished_during_a_long_poll(connect, client) as scene:
        waiting = await scene.until_one_waits()
        await scene.worker.stop()
        back = await client.get(waiting)
        assert (back.state, back.attempt) == (JobState.QUEUED, 0)
        assert "stopped before the job started" in back.last_error
        assert waiting not in scene.started


async def test_a_job_cancelled_while_leased_ahead_ends_cancelled_without_its_handler_running(
    connect: ConnectOptions, client: Client
) -> None:
    async with _one_finished_during_a_long_poll(connect, client) as scene:
        waiting = await scene.until_one_waits()
        await client.cancel(waiting, "not needed")
        ended = await state_is(client, waiting, JobState.CANCELLED)
        assert ended.terminal_reason is TerminalReason.CANCELLED
        await scene.all_succeed(list(scene.started))
        assert waiting not in scene.started


async def test_with_lease_ahead_off_a_worker_leases_no_more_than_its_free_slots(
    connect: ConnectOptions, client: Client
) -> None:
    off = replace(QUICK, lease_ahead=False)
    async with _one_finished_during_a_long_poll(connect, client, off) as scene:
        await until(lambda: _true_if(len(scene.started) == 2), "two handlers started")
        assert await scene.leased() == 2
        await scene.all_succeed()


async def test_long_jobs_are_not_leased_ahead(connect: ConnectOptions, client: Client) -> None:
    worker = Worker(replace(QUICK, concurrency=2), connect)
    release = asyncio.Event()
    started: list[str] = []

    @worker.handler("block")
    async def block(job: JobContext) -> None:
        started.append(job.id)
        await release.wait()

    four = await client.enqueue_many([JobRequest("q", "block", {"i": i}) for i in range(4)])
    ids = [r.job.id for r in four if isinstance(r, Enqueued)]
    await worker.start()
    try:
        await until(lambda: _true_if(len(started) == 2), "two handlers started")
        # Nothing finished while its Lease call was out: no third lease to wait for a slot.
        states = [(await client.get(i)).state for i in ids]
        assert (states.count(JobState.LEASED), states.count(JobState.QUEUED)) == (2, 2)
        release.set()
        for job_id in ids:
            await state_is(client, job_id, JobState.SUCCEEDED)
    finally:
        release.set()
        await worker.stop()
