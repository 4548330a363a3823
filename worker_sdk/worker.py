"""The worker: lease jobs in batches, run handlers, keep leases alive, complete, shut down cleanly.

    worker = Worker(WorkerOptions(queues=("emails",), concurrency=20))

    @worker.handler("send")
    async def send(job: JobContext) -> dict:
        await smtp.send(**job.json())
        return {"sent": True}

    worker.run()  # until SIGTERM or SIGINT; or `python -m worker_sdk run app:worker`

Shutdown, on a signal or `stop()`: stop leasing; let running handlers finish
within `shutdown_grace`; cancel the rest and give their jobs back (Nack with
release), so they are delivered again at once rather than when the lease
would have expired; send every outcome; close.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import signal
import socket
import traceback
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from worker_sdk import _retry, event_loop, gc_tuning
from worker_sdk._completions import Ack, Completions, Nack, Outcome
from worker_sdk._convert import duration
from worker_sdk._lease import Heartbeats, Held, LeaseState, new_held
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2 as pb
from worker_sdk.client import Client
from worker_sdk.context import JobContext, NonRetryable, Retry
from worker_sdk.errors import from_rpc_error
from worker_sdk.options import ConnectOptions, WorkerOptions
from worker_sdk.types import encode_payload

logger = logging.getLogger(__name__)
tracer = trace.get_tracer("worker_sdk")
MAX_ERROR_CHARS = 4000
Handler = Callable[[JobContext], Any]
F = TypeVar("F", bound=Handler)


@dataclass(frozen=True)
class _Registered:
    fn: Handler
    is_async: bool
    non_retryable: tuple[type[BaseException], ...]


class Worker:
    """Runs handlers for the jobs of some queues; use as `async with` or call `run()`."""

    def __init__(
        self, options: WorkerOptions | None = None, connect: ConnectOptions | None = None
    ) -> None:
        self.options = options or WorkerOptions()
        self.connect = connect  # None: ConnectOptions.from_env() when it starts
        self._handlers: dict[str, _Registered] = {}
        self._held: dict[str, Held] = {}
        self._taken = 0  # jobs leased and not yet finished, running or waiting for a slot
        self._finished = 0  # jobs finished since start, to count them per Lease call
        self._ahead = 0  # jobs the next Lease may take beyond the free slots
        self._finished_in_last_call = 0  # jobs finished while the last Lease call was out
        self._slots = asyncio.Semaphore(self.options.concurrency)  # handlers running
        self._slot_freed = asyncio.Event()
        self._stopping: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._lease_call: Any = None  # the Lease long-poll in flight
        self._client: Client | None = None
        self._pool: ThreadPoolExecutor | None = None
        self.worker_id = self.options.worker_id or _default_worker_id()

    # ---- registration --------------------------------------------------------

    def handler(
        self, type: str | None = None, *, non_retryable: tuple[type[BaseException], ...] = ()
    ) -> Callable[[F], F]:
        """Register a function for a job type (default: its name). Async or plain.

        The return value becomes the job's result (bytes as is, anything else
        as JSON). An exception fails the attempt and the job is retried; one
        of `non_retryable` (or a NonRetryable) dead-letters it at once;
        raise Retry(after=...) to choose the delay.
        """

        def register(fn: F) -> F:
            name = type or fn.__name__
            if name in self._handlers:
                raise ValueError(f"a handler for job type {name!r} is already registered")
            self._handlers[name] = _Registered(
                fn, inspect.iscoroutinefunction(fn), (NonRetryable, *non_retryable)
            )
            return fn

        return register

    # ---- lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start leasing and running jobs in the background."""
        if self._stopping is not None:
            raise RuntimeError("a worker starts once")
        if not self._handlers:
            raise RuntimeError("register at least one handler before starting")
        self._stopping = asyncio.Event()
        self._client = Client(self.connect or ConnectOptions.from_env())
        self._pool = ThreadPoolExecutor(
            self.options.thread_pool_size or self.options.concurrency,
            thread_name_prefix="worker-handler",
        )
        self._heartbeats = Heartbeats(self._client, self._held, self.options)
        self._completions = Completions(self._client, self._heartbeats.added)
        self._tasks = [
            asyncio.create_task(self._heartbeats.run(), name="heartbeats"),
            asyncio.create_task(self._completions.run(), name="completions"),
        ]
        self._lease_task = asyncio.create_task(self._lease_loop(), name="lease")
        logger.info(
            "worker %s leasing from %s on %s, concurrency %d",
            self.worker_id, ",".join(self.options.queues), self._client.options.address,
            self.options.concurrency,
        )  # fmt: skip

    async def wait_stopped(self) -> None:
        """Wait until `stop()` was called (from a signal handler, say)."""
        assert self._stopping is not None, "start() first"
        await self._stopping.wait()

    def request_stop(self) -> None:
        """Ask the worker to stop; `run()` and `wait_stopped()` return once it has."""
        if self._stopping is not None:
            self._stopping.set()

    async def stop(self) -> None:
        """Stop leasing, drain within the grace period, give back the rest, flush, close."""
        if self._stopping is None or self._client is None:
            return
        self._stopping.set()
        self._slot_freed.set()
        # Cancel the call, not the task: a reply that already arrived is still taken
        # in (its jobs run or are given back below) instead of being dropped.
        if self._lease_call is not None:
            self._lease_call.cancel()
        await self._lease_task
        await self._drain()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        await self._client.close()
        logger.info("worker %s stopped", self.worker_id)

    async def _drain(self) -> None:
        grace = self.options.shutdown_grace.total_seconds()
        for h in list(self._held.values()):  # leased ahead, not started: given back at once
            if h.state is LeaseState.RUNNING and not h.started:
                h.end(LeaseState.RELEASING)
        running = [h.task for h in self._held.values() if h.task is not None and not h.task.done()]
        if running:
            logger.info("waiting up to %.0fs for %d running jobs", grace, len(running))
            await asyncio.wait(running, timeout=grace)
        for h in list(self._held.values()):
            if h.state is LeaseState.RUNNING:
                h.end(LeaseState.RELEASING)
        tasks = [h.task for h in self._held.values() if h.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        waits = [h.done.wait() for h in self._held.values()]
        if waits:  # outcomes are sent while their leases last
            try:
                # Not wait_for: see the house rule in tests/unit/test_codebase_rules.py.
                async with asyncio.timeout(self._client_timeout() * 3):
                    await asyncio.gather(*waits)
            except TimeoutError:
                logger.warning("stopped before every outcome was sent; those jobs will be retried")

    def _client_timeout(self) -> float:
        assert self._client is not None
        return self._client.options.timeout.total_seconds()

    def run(self) -> None:
        """Run until SIGTERM or SIGINT, then shut down gracefully (blocking).

        On the event loop `options.event_loop` names: by default uvloop where
        it is installed, which costs a worker less CPU per job than asyncio's
        own loop. Raises `LoopUnavailable` (before connecting) for a loop that
        cannot be used here.
        """
        name, new_loop = event_loop.loop_factory(self.options.event_loop)
        logger.debug("worker %s runs on the %s event loop", self.worker_id, name)
        with asyncio.Runner(loop_factory=new_loop) as runner:
            runner.run(self._run_with_signals())

    async def _run_with_signals(self) -> None:
        loop = asyncio.get_running_loop()
        await self.start()
        gc_tuning.tune_for_service()  # this process is the worker (see gc_tuning)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        try:
            await self.wait_stopped()
            logger.info("worker %s stopping", self.worker_id)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await self.stop()

    # ---- leasing ---------------------------------------------------------------

    async def _lease_loop(self) -> None:
        assert self._client is not None and self._stopping is not None
        backoff = _retry.Backoff(self._client.options.retry)
        while not self._stopping.is_set():
            room = self.options.concurrency + self._ahead - self._taken
            if room <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            finished_before = self._finished
            try:
                leases = await self._lease(min(room, self.options.max_lease_batch))
            except asyncio.CancelledError:
                if self._stopping.is_set():
                    return  # stop() cancelled the long-poll (the server gives back what it took)
                raise
            except grpc.aio.AioRpcError as exc:
                delay = backoff.next_delay_s()
                logger.warning("lease failed (%s); again in %.2fs", from_rpc_error(exc), delay)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):  # not wait_for (see `stop`)
                        await self._stopping.wait()
                continue
            backoff.reset()
            if self.options.lease_ahead:
                # As many as finished while one of the last two calls was out: short
                # jobs that free their slots within a call's round trip have their
                # next ones waiting, and each call carries more (fewer calls per
                # job: the server's per-call costs are large); long ones take none
                # ahead. Two calls, because with short jobs they alternate between
                # one that sees a batch finish and one that sees little: by the
                # last call alone, calls carried 63-76 jobs at concurrency 100, by
                # the last two 90-99.
                finished = self._finished - finished_before
                most = max(finished, self._finished_in_last_call)
                self._ahead = min(most, self.options.concurrency)
                self._finished_in_last_call = finished
            # Looked up once per reply, not per job: with none installed, each
            # lookup reads os.environ, which cost a few percent of a no-op job.
            provider = trace.get_tracer_provider()
            for lease in leases:
                self._start(lease, provider)

    async def _lease(self, max_jobs: int) -> list[pb.Lease]:
        assert self._client is not None
        o = self.options
        request = pb.LeaseRequest(
            namespace=self._client.namespace,
            worker_id=self.worker_id,
            queues=list(o.queues),
            max_jobs=max_jobs,
            wait=duration(o.poll_wait),
        )
        if o.lease_duration is not None:
            request.lease_duration.CopyFrom(duration(o.lease_duration))
        timeout = o.poll_wait.total_seconds() + self._client_timeout()
        self._lease_call = self._client.raw.Lease(request, timeout=timeout)
        try:
            reply = await self._lease_call
        finally:
            self._lease_call = None
        return list(reply.leases)

    def _start(self, lease: pb.Lease, provider: trace.TracerProvider) -> None:
        context = JobContext._of_lease(lease.job, self.worker_id)
        held = new_held(lease, context, self.options, self._held)
        self._held[held.token] = held
        self._taken += 1
        held.task = asyncio.create_task(self._run_job(held, provider), name=f"job {context.id}")
        held.task.add_done_callback(lambda _: self._job_done())
        self._heartbeats.added(held)

    def _job_done(self) -> None:
        self._taken -= 1
        self._finished += 1
        self._slot_freed.set()

    # ---- running ---------------------------------------------------------------

    async def _run_job(self, held: Held, provider: trace.TracerProvider) -> None:
        try:
            await self._slots.acquire()  # at once, unless the job was leased ahead
        except asyncio.CancelledError:  # lost, cancelled or given back before it started
            outcome = _after_cancel(held)
        else:
            held.started = True
            try:
                with _job_span(held.context, provider):
                    outcome = await self._outcome(held)
            finally:
                self._slots.release()
        if outcome is None:  # lost: nothing may be sent
            held.settle()
            return
        self._completions.put(held, outcome)

    async def _outcome(self, held: Held) -> Outcome | None:
        registered = self._handlers.get(held.context.type)
        if registered is None:
            return Nack(f"no handler for job type {held.context.type!r} on {self.worker_id}")
        try:
            result = await self._call(registered, held.context)
        except asyncio.CancelledError:
            return _after_cancel(held)
        except Retry as exc:
            return Nack(_describe(exc), retry=True, retry_after=exc.after)
        except Exception as exc:
            if held.state is not LeaseState.RUNNING:
                return _after_cancel(held)  # a thread noticed `cancelled` and gave up
            return Nack(_describe(exc), retry=not isinstance(exc, registered.non_retryable))
        if held.state is not LeaseState.RUNNING:
            return _after_cancel(held)
        return Ack(*_encode_result(result))

    async def _call(self, registered: _Registered, context: JobContext) -> Any:
        if registered.is_async:
            return await registered.fn(context)
        loop = asyncio.get_running_loop()
        ctx = otel_context.get_current()

        def in_thread() -> Any:
            token = otel_context.attach(ctx)  # the handler's spans join the job's trace
            try:
                return registered.fn(context)
            finally:
                otel_context.detach(token)

        result = await loop.run_in_executor(self._pool, in_thread)
        if inspect.isawaitable(result):  # a plain function returning an awaitable
            return await result
        return result


def _job_span(
    context: JobContext, provider: trace.TracerProvider
) -> AbstractContextManager[object]:
    """The job's CONSUMER span, a child of the producer's trace.

    With no tracer provider installed no span would be recorded: then only the
    producer's context is made current (all a no-op span would carry, so that
    what the handler calls still joins the trace), at a fraction of the cost.
    """
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        if not context._trace_context():
            return contextlib.nullcontext()
        return _attached(propagate.extract(dict(context._trace_context())))
    job = context.job
    return tracer.start_as_current_span(
        f"{job.type} process",
        context=propagate.extract(dict(job.trace_context)),
        kind=trace.SpanKind.CONSUMER,
        attributes={
            "messaging.system": "dispatcher",
            "messaging.destination.name": job.queue,
            "messaging.message.id": job.id,
            "dispatcher.job.type": job.type,
            "dispatcher.job.attempt": job.attempt,
        },
    )


@contextlib.contextmanager
def _attached(ctx: otel_context.Context) -> Iterator[None]:
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)


def _after_cancel(held: Held) -> Outcome | None:
    if held.state is LeaseState.CANCEL_REQUESTED:
        when = "while running" if held.started else "before it started"
        return Nack(f"cancelled {when}", retry=False)
    if held.state is LeaseState.RELEASING:
        what = "finished" if held.started else "started"
        return Nack(f"the worker stopped before the job {what}", release=True)
    return None  # LOST


def _describe(exc: BaseException) -> str:
    """The exception, then as much of the end of its traceback as fits."""
    head = f"{type(exc).__name__}: {exc}"[: MAX_ERROR_CHARS // 2]
    text = "".join(traceback.format_exception(exc))
    return f"{head}\n{text[-(MAX_ERROR_CHARS - len(head) - 1) :]}"


def _encode_result(result: Any) -> tuple[bytes, str]:
    """Bytes as they are (octet-stream), anything else as JSON, the way payloads are."""
    if result is None:
        return b"", ""
    raw = isinstance(result, bytes | bytearray | memoryview)
    return encode_payload(result, "application/octet-stream" if raw else None)


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
