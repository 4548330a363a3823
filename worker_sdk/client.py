"""The producer client: enqueue jobs, read their status, follow them, wait for results.

async with Client("127.0.0.1:50051") as client:
    job = await client.enqueue("emails", "send", {"to": "ada@example.com"})
    done = await client.result(job.id, timeout=timedelta(seconds=30))
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import secrets
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from datetime import timedelta
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc

from worker_sdk import _convert, _retry
from worker_sdk._channel import open_channel
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2 as pb
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2_grpc
from worker_sdk._proto.dispatch.v1 import job_pb2 as jpb
from worker_sdk.errors import DispatcherError, JobFailed, code_from_int, error_for, from_rpc_error
from worker_sdk.options import ConnectOptions
from worker_sdk.queues import Queues
from worker_sdk.schedules import Schedules
from worker_sdk.types import (
    Enqueued,
    Job,
    JobOptions,
    JobRequest,
    JobState,
    JobUpdate,
    JobView,
)

T = TypeVar("T")

logger = logging.getLogger(__name__)
MAX_BATCH = 500  # jobs per EnqueueBatch: coalesced enqueues, and each call of `enqueue_many`
# Encoded specs per EnqueueBatch (either kind): half the server's default message
# limit (8 MiB), so that a call stays below it with one more job of the largest payload.
MAX_BATCH_BYTES = 4 * 1024 * 1024
CALLS_IN_FLIGHT = 2  # `enqueue_many` calls of one list on the wire at once


class Client:
    """An async client of the dispatcher. Cheap to create; the channel opens on first use.

    Every call has the deadline `options.timeout`, and failures that are safe to
    retry (UNAVAILABLE, RESOURCE_EXHAUSTED) are retried with backoff. An
    enqueue without an idempotency key gets a fresh one, reused by its
    retries, so a retry never creates a second job; an `enqueue_many` call
    whose jobs carry none gets one request_id for the call instead, which
    costs the server less than a key per job.
    """

    def __init__(
        self, options: ConnectOptions | str | None = None, *, batch_window: timedelta | None = None
    ) -> None:
        """Args:
        options: where and how to connect (a string is an address); default: from the env.
        batch_window: if set, concurrent `enqueue` calls made within this window (say
            1 ms) are sent together as one EnqueueBatch; each still gets its own job
            or error. Raises throughput for producers that enqueue from many tasks.
            A call made by a task whose previous enqueue has just returned does not
            wait out the window: those calls go together at once.
        """
        if options is None:
            options = ConnectOptions.from_env()
        elif isinstance(options, str):
            options = ConnectOptions(address=options)
        self.options = options
        self._channel: grpc.aio.Channel | None = None
        self._stub: dispatcher_pb2_grpc.DispatcherServiceAsyncStub | None = None
        self._rng = random.Random()
        self._batch_window = batch_window.total_seconds() if batch_window else None
        self._pending: list[tuple[jpb.JobSpec, asyncio.Future[Job]]] = []
        self._pending_bytes = 0  # their encoded size: a batch stays below the message limit
        self._flush_timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Send what is waiting in the batch window, then close the channel.

        A later call opens a new channel.
        """
        self._flush_now()
        await asyncio.gather(*self._sending, return_exceptions=True)
        if self._channel is not None:
            channel, self._channel, self._stub = self._channel, None, None
            await channel.close()

    @property
    def raw(self) -> dispatcher_pb2_grpc.DispatcherServiceAsyncStub:
        """The generated stub, for what the SDK does not cover (takes and returns _pb2 types)."""
        if self._stub is None:
            self._channel = open_channel(self.options)
            self._stub = dispatcher_pb2_grpc.DispatcherServiceStub(self._channel)
        return self._stub

    @property
    def channel(self) -> grpc.aio.Channel:
        """The channel itself (opened on first use), for other services' generated stubs."""
        _ = self.raw
        assert self._channel is not None
        return self._channel

    @property
    def queues(self) -> Queues:
        """Queue control (admin role): pause, resume, limits."""
        return Queues(self)

    @property
    def schedules(self) -> Schedules:
        """Recurring schedules: create, list, pause, resume and delete them."""
        return Schedules(self)

    @property
    def namespace(self) -> str:
        return self.options.namespace

    @property
    def _timeout(self) -> float:
        return self.options.timeout.total_seconds()

    async def _unary(self, method: str, request: Any, *, idempotent: bool, stub: Any = None) -> Any:
        """One unary call with this client's deadline and retry rules; `stub` defaults
        to the DispatcherService's (`schedules` and `queues` pass theirs)."""
        target = stub if stub is not None else self.raw

        async def once() -> Any:
            return await getattr(target, method)(request, timeout=self._timeout)

        return await _retry.call(once, self.options.retry, idempotent=idempotent, rng=self._rng)

    # ---- producing -----------------------------------------------------------

    async def enqueue(
        self, queue: str, type: str, payload: Any = b"", options: JobOptions | None = None
    ) -> Job:
        """Enqueue one job; it is durable when this returns. Returns the job.

        `payload` is sent as is when it is bytes, else as JSON. With an
        `idempotency_key` that was used before, the earlier job is returned.

        Raises:
            InvalidArgument: a field is invalid (`fields` says which).
            AlreadyExists: the idempotency key was used with another payload.
            ResourceExhausted: the queue is full, even after retries.
        """
        request = JobRequest(queue, type, payload, options or JobOptions())
        if self._batch_window is not None:  # the batch's request_id makes it retry-safe
            return await self._coalesced(
                _convert.job_spec(request, request.options.idempotency_key or "")
            )
        spec = _convert.job_spec(request, _key(request, secrets.token_hex(16)))
        reply = await self._unary(
            "Enqueue", pb.EnqueueRequest(namespace=self.namespace, job=spec), idempotent=True
        )
        return _convert.job(reply.job)

    async def _coalesced(self, spec: jpb.JobSpec) -> Job:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Job] = loop.create_future()
        self._pending.append((spec, future))
        self._pending_bytes += spec.ByteSize()
        if len(self._pending) >= MAX_BATCH or self._pending_bytes >= MAX_BATCH_BYTES:
            self._flush_now()
        elif self._flush_timer is None:
            self._flush_timer = loop.call_later(self._batch_window or 0, self._flush_now)
        return await future

    def _flush_now(self) -> None:
        """Send what waits, and stop the window's timer (the next call starts its own)."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        batch, self._pending, self._pending_bytes = self._pending, [], 0
        if batch:
            task = asyncio.create_task(self._send_batch(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send_batch(self, batch: list[tuple[jpb.JobSpec, asyncio.Future[Job]]]) -> None:
        request = pb.EnqueueBatchRequest(namespace=self.namespace, jobs=[s for s, _ in batch])
        keyed = any(spec.idempotency_key for spec, _ in batch)
        try:
            results = await self._enqueue_batch(_retry_safe(request, keyed, secrets.token_hex(16)))
        except BaseException as exc:  # the whole call failed: so did each enqueue
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, DispatcherError):
                    future.set_exception(result)
                else:
                    future.set_result(result.job)
        # Callers that enqueue again as soon as their enqueue returns (a closed loop:
        # a task per worker, a gather over a list) do so in the event loop's next
        # pass, the pass that runs this callback after them: their calls go out
        # together at once. Waiting out the window would add nothing to the batch,
        # since each of those callers has only one call in flight.
        asyncio.get_running_loop().call_soon(self._flush_now)

    async def enqueue_many(
        self, requests: Iterable[JobRequest], *, view: JobView = JobView.FULL
    ) -> list[Enqueued | DispatcherError]:
        """Enqueue many jobs: one result per request, in order.

        `view` says how much of each job the results carry: `JobView.BASIC`
        (ids, states, times; no payload sent back) when only the ids matter,
        as for most bulk producers: half the reply's bytes, and about 0.2 ms
        less of the server's CPU per call of 100 jobs.

        Each item succeeds or fails on its own (a failed item is returned as
        its DispatcherError, not raised). Any number of requests: they go as
        EnqueueBatch calls of up to `MAX_BATCH` jobs (and about
        `MAX_BATCH_BYTES`), `CALLS_IN_FLIGHT` at a time, so that the server
        commits one call while the next is on its way. Every request is
        converted before the first call is sent.

        A failure of a call as a whole (the server unreachable after the
        retries, say) raises when the requests fit one call. When they take
        several, it becomes the result of each item of that call instead:
        the other calls' jobs may be committed, and their results say so.
        """
        call = uuid.uuid4().hex  # one random part per call: its requests differ by index
        batches = list(self._batches(requests, call, _convert.VIEW_TO_PROTO[view]))
        if len(batches) > 1:
            return await self._enqueue_batches(batches)
        return await self._enqueue_batch(batches[0]) if batches else []

    def _batches(
        self, requests: Iterable[JobRequest], call: str, view: pb.JobView.ValueType
    ) -> Iterator[pb.EnqueueBatchRequest]:
        """The EnqueueBatch requests that carry `requests`, in order."""
        batch = pb.EnqueueBatchRequest(namespace=self.namespace, view=view)
        specs = _convert.JobSpecs(batch)
        first = 0  # the batch's first request's index
        keyed = False  # whether a request of the batch brings its own key
        for i, r in enumerate(requests):
            key = r.options.idempotency_key
            keyed = keyed or key is not None
            specs.add(r, key or "")
            if len(batch.jobs) >= MAX_BATCH or specs.size >= MAX_BATCH_BYTES:
                yield _retry_safe(batch, keyed, f"{call}-{first}")
                batch = pb.EnqueueBatchRequest(namespace=self.namespace, view=view)
                specs = _convert.JobSpecs(batch)
                first, keyed = i + 1, False
        if batch.jobs:
            yield _retry_safe(batch, keyed, f"{call}-{first}")

    async def _enqueue_batches(
        self, batches: Sequence[pb.EnqueueBatchRequest]
    ) -> list[Enqueued | DispatcherError]:
        """Send several EnqueueBatch calls, `CALLS_IN_FLIGHT` at once; a call that
        fails whole gives its error to each of its items."""
        slots = asyncio.Semaphore(CALLS_IN_FLIGHT)

        async def send(batch: pb.EnqueueBatchRequest) -> list[Enqueued | DispatcherError]:
            async with slots:
                try:
                    return await self._enqueue_batch(batch)
                except DispatcherError as exc:
                    return [exc] * len(batch.jobs)

        parts = await asyncio.gather(*(send(b) for b in batches))
        return [result for part in parts for result in part]

    async def _enqueue_batch(
        self, batch: pb.EnqueueBatchRequest
    ) -> list[Enqueued | DispatcherError]:
        """`enqueue_many` for a request already made."""
        if not batch.jobs:
            return []
        if len(batch.jobs) == 1:  # the server fails a one-item batch whole: keep per-item shape
            job = batch.jobs[0]
            if batch.HasField("defaults"):  # Enqueue has none: the job takes them in
                job = _convert.over_defaults(batch.defaults, job)
            if not job.idempotency_key:  # Enqueue has no request_id: the job takes it as key
                job.idempotency_key = batch.request_id
            try:
                request = pb.EnqueueRequest(namespace=self.namespace, job=job, view=batch.view)
                reply = await self._unary("Enqueue", request, idempotent=True)
            except DispatcherError as exc:
                if exc.code in self.options.retry.codes:
                    raise
                return [exc]
            return [_convert.enqueued(reply.job, reply.created)]
        reply = await self._unary("EnqueueBatch", batch, idempotent=True)
        return [_enqueue_result(r) for r in reply.results]

    async def get(self, job_id: str) -> Job:
        """The job as it is now.

        Raises:
            NotFound: no job has this id in the namespace.
        """
        request = pb.GetStatusRequest(namespace=self.namespace, job_id=job_id)
        reply = await self._unary("GetStatus", request, idempotent=True)
        return _convert.job(reply.job)

    async def cancel(self, job_id: str, reason: str = "") -> Job:
        """Cancel a job: at once if it is not running, else its worker is told to stop.

        Raises:
            NotFound: no such job.
            FailedPrecondition: it already succeeded or was dead-lettered.
        """
        request = pb.CancelRequest(namespace=self.namespace, job_id=job_id, reason=reason)
        reply = await self._unary("Cancel", request, idempotent=True)
        return _convert.job(reply.job)

    # ---- following -----------------------------------------------------------

    async def updates(
        self, job_ids: Sequence[str] = (), queue: str = ""
    ) -> AsyncIterator[JobUpdate]:
        """Follow jobs (or a whole queue): their current state first, then every transition.

        Reconnects by itself when the stream breaks, and resumes without a
        gap or a repeat (each job's updates carry increasing versions). When
        following jobs, it ends once every one of them is terminal.
        """
        seen: dict[str, int] = {}
        done: set[str] = set()
        backoff = _retry.Backoff(self.options.retry, self._rng)
        while True:
            pending = [j for j in job_ids if j not in done]
            if job_ids and not pending:
                return
            request = pb.StreamUpdatesRequest(
                namespace=self.namespace, job_ids=pending, queue=queue
            )
            try:
                async for message in self.raw.StreamUpdates(request):
                    backoff.reset()
                    update = _convert.update(message)
                    if update.version <= seen.get(update.job_id, 0):
                        continue  # already delivered before a reconnect
                    seen[update.job_id] = update.version
                    if update.state.terminal:
                        done.add(update.job_id)
                    yield update
                if job_ids:
                    continue  # the server ended it: every job is terminal (checked above)
                return
            except grpc.aio.AioRpcError as exc:
                err = from_rpc_error(exc)
                if err.code not in self.options.retry.codes:
                    raise err from None
                if backoff.failures + 1 >= self.options.retry.max_attempts:
                    raise err from None
                delay = backoff.next_delay_s()
                logger.info("update stream broke (%s); resuming in %.2fs", err.code.name, delay)
                await asyncio.sleep(delay)

    # `timeout` is part of the contract (as on SyncClient), not a cancel scope: noqa ASYNC109.
    async def wait(self, job_id: str, timeout: timedelta | None = None) -> Job:  # noqa: ASYNC109
        """Wait until the job is terminal and return it (whatever its outcome).

        Raises:
            TimeoutError: it was not terminal within `timeout`.
        """
        async with asyncio.timeout(timeout.total_seconds() if timeout else None):
            async for update in self.updates([job_id]):
                if update.state.terminal:
                    return update.job or await self.get(job_id)
            return await self.get(job_id)

    async def result(self, job_id: str, timeout: timedelta | None = None) -> Job:  # noqa: ASYNC109
        """Wait for the job to succeed and return it (`job.result`, `job.result_json()`).

        Raises:
            JobFailed: it was dead-lettered or cancelled (the job is attached).
            TimeoutError: it was not terminal within `timeout`.
        """
        job = await self.wait(job_id, timeout)
        if job.state is not JobState.SUCCEEDED:
            raise JobFailed(job)
        return job


def _retry_safe(batch: pb.EnqueueBatchRequest, keyed: bool, fresh: str) -> pb.EnqueueBatchRequest:
    """The batch, made safe to send again (`fresh` is unique to it): with one
    request_id when none of its jobs brings an idempotency key, which the
    server records once for the call; else with a key on each job without one
    (a server refuses a request_id beside keys)."""
    if not keyed:
        batch.request_id = f"sdk:{fresh}"
        return batch
    for i, spec in enumerate(batch.jobs):
        if not spec.idempotency_key:
            spec.idempotency_key = f"sdk:{fresh}-{i}"
    return batch


def _key(r: JobRequest, fresh: str) -> str:
    """The request's idempotency key, or `sdk:<fresh>`, which its retries reuse
    (`fresh` is unique to this request: random, or a call's random part and
    the request's index in it)."""
    key = r.options.idempotency_key
    return key if key is not None else f"sdk:{fresh}"


def _enqueue_result(r: pb.EnqueueResult) -> Enqueued | DispatcherError:
    if r.HasField("error"):
        return error_for(code_from_int(r.error.code), r.error.message, r.error.reason)
    return Enqueued.converted_on_read(functools.partial(_convert.job, r.job), r.created)
