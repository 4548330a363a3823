"""The producer client against a real dispatcher, on each backend."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from dispatcher.app import DispatcherApp
from dispatcher.clock import FakeClock
from worker_sdk import (
    AlreadyExists,
    Backoff,
    Client,
    ConnectOptions,
    Enqueued,
    InvalidArgument,
    Job,
    JobFailed,
    JobOptions,
    JobRequest,
    JobState,
    JobView,
    NotFound,
    Priority,
    SyncClient,
    Unavailable,
)
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2 as pb


async def _lease_and_ack(client: Client, result: bytes = b"", queue: str = "q") -> str:
    """Complete the next job with the raw stub, the way any worker would."""
    reply = await client.raw.Lease(
        pb.LeaseRequest(worker_id="w", queues=[queue], max_jobs=1), timeout=5
    )
    (lease,) = reply.leases
    await client.raw.Ack(
        pb.AckRequest(items=[pb.AckItem(lease_token=lease.lease_token, result=result)]),
        timeout=5,
    )
    return lease.job.id


async def test_an_enqueued_object_is_sent_as_json_and_read_back_with_native_types(
    client: Client, clock: FakeClock
) -> None:
    run_at = datetime.fromtimestamp(clock.now_ms() / 1000 + 60, tz=UTC)
    job = await client.enqueue(
        "q",
        "send",
        {"to": "ada@example.com"},
        JobOptions(priority=Priority.HIGH, metadata={"team": "a"}, run_at=run_at, max_attempts=7),
    )
    again = await client.get(job.id)
    assert again.json() == {"to": "ada@example.com"}
    assert again.content_type == "application/json"
    assert (again.priority, again.state, again.max_attempts) == (
        Priority.HIGH,
        JobState.SCHEDULED,
        7,
    )
    assert again.metadata == {"team": "a"}
    assert again.next_run_at == run_at


async def test_bytes_are_sent_as_they_are(client: Client) -> None:
    job = await client.enqueue("q", "t", b"\x00raw", JobOptions(content_type="x/y"))
    assert (job.payload, job.content_type) == (b"\x00raw", "x/y")


async def test_the_same_idempotency_key_returns_the_first_job_and_another_payload_is_refused(
    client: Client,
) -> None:
    options = JobOptions(idempotency_key="order-42")
    first = await client.enqueue("q", "t", {"n": 1}, options)
    second = await client.enqueue("q", "t", {"n": 1}, options)
    assert second.id == first.id
    with pytest.raises(AlreadyExists):
        await client.enqueue("q", "t", {"n": 2}, options)


async def test_an_invalid_field_raises_invalid_argument_naming_the_field(client: Client) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await client.enqueue("bad queue!", "t")
    assert "job.queue" in caught.value.fields
    assert caught.value.reason == "INVALID_FIELD"


async def test_a_naive_run_at_is_refused_before_anything_is_sent(client: Client) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await client.enqueue("q", "t", options=JobOptions(run_at=datetime(2030, 1, 1)))  # noqa: DTZ001


async def test_enqueue_many_returns_one_result_per_request_in_order(client: Client) -> None:
    results = await client.enqueue_many(
        [JobRequest("q", "t", {"i": 1}), JobRequest("", "t"), JobRequest("q", "t", {"i": 3})]
    )
    assert [type(r) for r in results] == [Enqueued, InvalidArgument, Enqueued]
    ok = [r for r in results if isinstance(r, Enqueued)]
    assert [r.job.json() for r in ok] == [{"i": 1}, {"i": 3}]
    assert all(r.created for r in ok)


async def test_enqueue_many_of_one_shape_makes_each_job_with_its_options_and_payload(
    client: Client,
) -> None:
    """The shape goes once, as the call's defaults (each job only its payload):
    what each job is stored as does not show it, alone or in a batch."""
    options = JobOptions(
        priority=Priority.HIGH, metadata={"k": "v"}, max_attempts=4, delay=timedelta(minutes=5)
    )
    for n in (1, 3):  # one request goes as an Enqueue, several as one EnqueueBatch
        results = await client.enqueue_many(
            [JobRequest("q", "t", {"i": i}, options) for i in range(n)]
        )

        assert all(isinstance(r, Enqueued) for r in results)
        stored = [await client.get(r.job.id) for r in results if isinstance(r, Enqueued)]
        assert [s.json() for s in stored] == [{"i": i} for i in range(n)]
        for s in stored:
            assert (s.queue, s.type, s.priority, s.max_attempts) == ("q", "t", Priority.HIGH, 4)
            assert (dict(s.metadata), s.state) == ({"k": "v"}, JobState.SCHEDULED)


async def test_enqueue_many_in_the_basic_view_returns_ids_and_states_without_payloads(
    client: Client,
) -> None:
    results = await client.enqueue_many(
        [JobRequest("q", "t", {"i": 1}, JobOptions(metadata={"k": "v"})), JobRequest("", "t")],
        view=JobView.BASIC,
    )
    made, refused = results
    assert isinstance(made, Enqueued) and made.created
    assert isinstance(refused, InvalidArgument)
    job = made.job
    assert (job.queue, job.type, job.state, job.version) == ("q", "t", JobState.QUEUED, 1)
    assert job.created_at is not None
    assert (job.payload, dict(job.metadata)) == (b"", {})
    stored = await client.get(job.id)
    assert (stored.json(), dict(stored.metadata)) == ({"i": 1}, {"k": "v"})


async def test_the_sync_client_passes_the_view_on(app: DispatcherApp) -> None:
    def blocking_code() -> tuple[bytes, bytes]:
        with SyncClient(ConnectOptions(address=f"127.0.0.1:{app.port}")) as client:
            (basic,) = client.enqueue_many([JobRequest("q", "t", {"n": 1})], view=JobView.BASIC)
            (full,) = client.enqueue_many([JobRequest("q", "t", {"n": 1})])
            assert isinstance(basic, Enqueued) and isinstance(full, Enqueued)
            return basic.job.payload, full.job.payload

    assert await asyncio.to_thread(blocking_code) == (b"", b'{"n":1}')


async def test_identical_requests_without_keys_each_make_their_own_job_within_and_across_calls(
    client: Client,
) -> None:
    same = [JobRequest("q", "t", {"i": 1})] * 3
    results = [r for _ in range(2) for r in await client.enqueue_many(same)]

    assert all(isinstance(r, Enqueued) and r.created for r in results)
    jobs = [r.job for r in results if isinstance(r, Enqueued)]
    assert len({j.id for j in jobs}) == 6
    # Each call is made retry-safe by its request_id, not by a key on each job.
    assert {j.idempotency_key for j in jobs} == {""}


async def test_enqueue_many_with_one_bad_request_returns_its_error_instead_of_raising(
    client: Client,
) -> None:
    (only,) = await client.enqueue_many([JobRequest("", "t")])
    assert isinstance(only, InvalidArgument)


class _EnqueueBatchSpy:
    """Wraps a client's calls: counts the EnqueueBatch calls and how many were
    in flight at once; `fail_call` (1-based) fails that one whole."""

    def __init__(self, client: Client, fail_call: int | None = None) -> None:
        self.sizes: list[int] = []
        self.in_flight = self.most_in_flight = 0
        self._real = client._unary
        self._fail_call = fail_call

    async def __call__(self, method: str, request: Any, **kwargs: Any) -> Any:
        if method != "EnqueueBatch":
            return await self._real(method, request, **kwargs)
        self.sizes.append(len(request.jobs))
        if len(self.sizes) == self._fail_call:
            raise Unavailable(grpc.StatusCode.UNAVAILABLE, "the server is down")
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            return await self._real(method, request, **kwargs)
        finally:
            self.in_flight -= 1


async def test_enqueue_many_takes_more_jobs_than_one_call_holds_in_calls_two_at_a_time(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _EnqueueBatchSpy(client)
    monkeypatch.setattr(client, "_unary", spy)

    # More than the server takes in one call (1,000): sent whole, it was refused.
    results = await client.enqueue_many([JobRequest("q", "t", {"i": i}) for i in range(1234)])

    assert spy.sizes == [500, 500, 234]
    assert spy.most_in_flight == 2
    assert all(isinstance(r, Enqueued) and r.created for r in results)
    jobs = [r.job for r in results if isinstance(r, Enqueued)]
    assert [j.json()["i"] for j in jobs] == list(range(1234))
    assert len({j.id for j in jobs}) == 1234


async def test_enqueue_many_splits_large_payloads_below_the_servers_message_limit(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _EnqueueBatchSpy(client)
    monkeypatch.setattr(client, "_unary", spy)
    big = b"x" * 900_000  # 12 of them, 10.8 MB, are more than one message may carry (8 MiB)

    results = await client.enqueue_many([JobRequest("q", "t", big) for _ in range(12)])

    assert spy.sizes == [5, 5, 2]
    assert all(isinstance(r, Enqueued) for r in results)
    first = results[0]
    assert isinstance(first, Enqueued) and (await client.get(first.job.id)).payload == big


async def test_a_call_that_fails_whole_among_several_fails_only_its_own_items(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _EnqueueBatchSpy(client, fail_call=2)
    monkeypatch.setattr(client, "_unary", spy)

    results = await client.enqueue_many([JobRequest("q", "t", {"i": i}) for i in range(1100)])

    assert spy.sizes == [500, 500, 100]
    assert all(isinstance(r, Unavailable) for r in results[500:1000])
    kept = results[:500] + results[1000:]
    assert all(isinstance(r, Enqueued) for r in kept)
    # The failed call's jobs were not made; the others' were committed.
    for r in kept[::99]:
        assert isinstance(r, Enqueued) and (await client.get(r.job.id)).state is JobState.QUEUED


async def test_a_call_that_fails_whole_raises_when_every_request_fits_in_it(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client, "_unary", _EnqueueBatchSpy(client, fail_call=1))

    with pytest.raises(Unavailable):
        await client.enqueue_many([JobRequest("q", "t", {"i": i}) for i in range(3)])


async def test_getting_an_unknown_job_raises_not_found(client: Client) -> None:
    with pytest.raises(NotFound):
        await client.get("01J00000000000000000000000")


async def test_result_returns_the_succeeded_job_with_its_result(client: Client) -> None:
    job = await client.enqueue("q", "t", {})
    waiting = asyncio.create_task(client.result(job.id, timeout=timedelta(seconds=30)))
    await _lease_and_ack(client, b'{"ok":true}')
    done = await waiting
    assert (done.id, done.state, done.result_json()) == (job.id, JobState.SUCCEEDED, {"ok": True})


async def test_result_raises_job_failed_for_a_cancelled_job(client: Client) -> None:
    job = await client.enqueue("q", "t", {})
    cancelled = await client.cancel(job.id, "not needed")
    assert cancelled.state is JobState.CANCELLED
    with pytest.raises(JobFailed) as caught:
        await client.result(job.id, timeout=timedelta(seconds=30))
    assert caught.value.job.last_error == "not needed"


async def test_wait_gives_up_after_its_timeout(client: Client) -> None:
    job = await client.enqueue("q", "t", {})
    with pytest.raises(TimeoutError):
        await client.wait(job.id, timeout=timedelta(milliseconds=200))


async def test_updates_yield_the_current_state_then_each_transition_until_terminal(
    client: Client,
) -> None:
    job = await client.enqueue("q", "t", {}, JobOptions(backoff=Backoff(jitter=0.0)))
    seen = []

    async def follow() -> None:
        async for u in client.updates([job.id]):
            seen.append((u.state, u.version))

    following = asyncio.create_task(follow())
    while not seen:
        await asyncio.sleep(0.01)
    await _lease_and_ack(client)
    await asyncio.wait_for(following, 30)
    assert [s for s, _ in seen] == [JobState.QUEUED, JobState.LEASED, JobState.SUCCEEDED]
    versions = [v for _, v in seen]
    assert versions == sorted(set(versions))


async def test_the_sync_client_does_the_same_without_await(app: DispatcherApp) -> None:
    def blocking_code() -> list[JobState]:
        with SyncClient(ConnectOptions(address=f"127.0.0.1:{app.port}")) as client:
            job = client.enqueue("q", "t", {"n": 1})
            assert client.get(job.id).json() == {"n": 1}
            assert client.cancel(job.id).state is JobState.CANCELLED
            with pytest.raises(JobFailed):
                client.result(job.id)
            made = client.schedules.create("s", JobRequest("q", "t"), interval=timedelta(hours=1))
            assert [s.id for s in client.schedules.list()] == [made.id]
            return [u.state for u in client.updates([job.id])]

    # In a thread, as in a web view: the server runs on this test's event loop.
    assert await asyncio.to_thread(blocking_code) == [JobState.CANCELLED]


async def test_concurrent_enqueues_in_a_batch_window_each_get_their_own_job_or_error(
    connect: ConnectOptions,
) -> None:
    async with Client(connect, batch_window=timedelta(milliseconds=5)) as client:
        results = await asyncio.gather(
            *(client.enqueue("q", "t", {"i": i}) for i in range(20)),
            client.enqueue("bad queue!", "t"),
            return_exceptions=True,
        )
        jobs, (error,) = results[:20], results[20:]
        assert isinstance(error, InvalidArgument)
        assert [j.json() for j in jobs] == [{"i": i} for i in range(20)]  # type: ignore[union-attr]
        assert len({j.id for j in jobs}) == 20  # type: ignore[union-attr]
        lone = await client.enqueue("q", "t", {"alone": True})  # a batch of one
        assert (await client.get(lone.id)).json() == {"alone": True}


def _count_batches(client: Client, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the batches the client sends, as it sends them."""
    batches: list[int] = []
    send = client._enqueue_batch

    async def counted(batch: Any) -> Any:
        batches.append(len(batch.jobs))
        return await send(batch)

    monkeypatch.setattr(client, "_enqueue_batch", counted)
    return batches


async def test_callers_that_enqueue_again_at_once_do_not_wait_out_the_batch_window(
    connect: ConnectOptions, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = Client(connect, batch_window=timedelta(hours=1))
    batches = _count_batches(client, monkeypatch)

    async def caller(i: int) -> list[Job]:
        return [await client.enqueue("q", "t", {"i": i, "round": r}) for r in range(3)]

    callers = asyncio.gather(*(caller(i) for i in range(10)))
    await asyncio.sleep(0.05)
    assert batches == []  # the first calls wait in the window...
    client._flush_now()  # ...until it ends (here: at once, not in an hour)
    # Each later round goes out as soon as its callers are back, in one call: were
    # it to wait out the window, this would time out.
    rounds = await asyncio.wait_for(callers, timeout=30)
    assert batches == [10, 10, 10]
    assert [[j.json() for j in jobs] for jobs in rounds] == [
        [{"i": i, "round": r} for r in range(3)] for i in range(10)
    ]
    await client.close()


async def test_enqueues_in_a_batch_window_go_in_calls_below_the_servers_message_limit(
    connect: ConnectOptions, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = Client(connect, batch_window=timedelta(hours=1))
    batches = _count_batches(client, monkeypatch)
    big = b"x" * 900_000  # 12 of them, 10.8 MB, are more than one message may carry (8 MiB)

    enqueues = asyncio.gather(*(client.enqueue("q", "t", big) for _ in range(12)))
    for _ in range(1000):  # full calls go at once...
        if len(batches) == 2:
            break
        await asyncio.sleep(0.01)
    assert batches == [5, 5]
    await client.close()  # ...and the last two wait in the window until the client closes
    jobs = await asyncio.wait_for(enqueues, timeout=30)
    assert batches == [5, 5, 2]
    assert len({j.id for j in jobs}) == 12


async def test_closing_the_client_sends_what_waits_in_the_batch_window(
    connect: ConnectOptions,
) -> None:
    client = Client(connect, batch_window=timedelta(seconds=60))
    pending = asyncio.create_task(client.enqueue("q", "t", {"late": True}))
    await asyncio.sleep(0.05)
    await client.close()
    job = await pending
    async with Client(connect) as reader:
        assert (await reader.get(job.id)).json() == {"late": True}


class _AnswerLostOnce:
    """The service's stub, except that the first EnqueueBatch reaches the server
    and its answer is lost (UNAVAILABLE), as when a connection drops mid-call."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.requests: list[pb.EnqueueBatchRequest] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def EnqueueBatch(self, request: pb.EnqueueBatchRequest, **kw: Any) -> Any:
        self.requests.append(request)
        reply = await self._real.EnqueueBatch(request, **kw)
        if len(self.requests) == 1:
            metadata = grpc.aio.Metadata()
            raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, metadata, metadata, "reset")
        return reply


async def test_enqueue_many_retried_after_a_lost_answer_enqueues_each_job_once(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub = _AnswerLostOnce(client.raw)
    monkeypatch.setattr(Client, "raw", property(lambda _: stub))

    results = await client.enqueue_many([JobRequest("q", "t", {"i": i}) for i in range(3)])

    first, retry = stub.requests
    assert first.request_id and retry.request_id == first.request_id
    assert all(not spec.idempotency_key for spec in first.jobs)
    assert all(isinstance(r, Enqueued) and not r.created for r in results)
    leased = await stub.Lease(pb.LeaseRequest(worker_id="w", queues=["q"], max_jobs=10), timeout=5)
    assert sorted(le.job.id for le in leased.leases) == sorted(
        r.job.id for r in results if isinstance(r, Enqueued)
    )


async def test_enqueue_many_with_a_key_of_its_own_keys_the_other_jobs_instead(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _EnqueueBatchSpy(client)
    sent: list[pb.EnqueueBatchRequest] = []
    real = spy.__call__

    async def keep(method: str, request: Any, **kwargs: Any) -> Any:
        if method == "EnqueueBatch":
            sent.append(request)
        return await real(method, request, **kwargs)

    monkeypatch.setattr(client, "_unary", keep)
    results = await client.enqueue_many(
        [JobRequest("q", "t", options=JobOptions(idempotency_key="mine")), JobRequest("q", "t")]
    )

    (request,) = sent
    assert request.request_id == ""
    keys = [spec.idempotency_key for spec in request.jobs]
    assert keys[0] == "mine" and keys[1].startswith("sdk:")
    assert all(isinstance(r, Enqueued) and r.created for r in results)


async def test_enqueues_in_a_batch_window_retried_after_a_lost_answer_make_each_job_once(
    connect: ConnectOptions, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Client(connect, batch_window=timedelta(milliseconds=5)) as client:
        stub = _AnswerLostOnce(client.raw)
        monkeypatch.setattr(Client, "raw", property(lambda _: stub))
        jobs = await asyncio.gather(*(client.enqueue("q", "t", {"i": i}) for i in range(3)))
        leased = await stub.Lease(
            pb.LeaseRequest(worker_id="w", queues=["q"], max_jobs=10), timeout=5
        )
    first, retry = stub.requests
    assert first.request_id and retry.request_id == first.request_id
    assert [spec.idempotency_key for spec in first.jobs] == ["", "", ""]
    assert sorted(le.job.id for le in leased.leases) == sorted(j.id for j in jobs)


async def test_enqueues_in_a_batch_window_with_a_key_of_their_own_key_the_others(
    connect: ConnectOptions, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Client(connect, batch_window=timedelta(milliseconds=5)) as client:
        stub = _AnswerLostOnce(client.raw)
        stub.requests.append(pb.EnqueueBatchRequest())  # no lost answer this time
        monkeypatch.setattr(Client, "raw", property(lambda _: stub))
        mine, other = await asyncio.gather(
            client.enqueue("q", "t", options=JobOptions(idempotency_key="mine")),
            client.enqueue("q", "t"),
        )
    (request,) = stub.requests[1:]
    assert request.request_id == ""
    assert mine.idempotency_key == "mine" and other.idempotency_key.startswith("sdk:")


async def test_a_lone_job_goes_as_enqueue_keyed_by_its_calls_request_id(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[Any] = []
    real = client._unary

    async def keep(method: str, request: Any, **kwargs: Any) -> Any:
        sent.append((method, request))
        return await real(method, request, **kwargs)

    monkeypatch.setattr(client, "_unary", keep)
    (only,) = await client.enqueue_many([JobRequest("q", "t")])
    ((method, request),) = sent
    assert method == "Enqueue"
    assert request.job.idempotency_key.startswith("sdk:")
    assert isinstance(only, Enqueued) and only.job.idempotency_key == request.job.idempotency_key
