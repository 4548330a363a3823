"""Traces follow a job from producer to worker; metrics move on the Prometheus endpoint."""

from __future__ import annotations

import asyncio
import functools
import socket
from collections.abc import Callable

import grpc
import httpx
from google.protobuf.duration_pb2 import Duration
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from dispatcher import telemetry
from dispatcher.app import DispatcherApp
from tests.service.helpers import parked
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2 as pb
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2_grpc
from worker_sdk._proto.dispatch.v1 import job_pb2 as jpb


@functools.cache
def installed() -> tuple[InMemorySpanExporter, int]:
    """Global providers can be set once per process: an in-memory span exporter and a
    Prometheus scrape endpoint on a free port, shared by the tests of this module."""
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider(resource=Resource.create({"service.name": "test"}))
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    telemetry.configure("prometheus", port, tracer_provider=tracer_provider)
    return spans, port


def _scrape(port: int) -> dict[str, float]:
    """Sum every sample of each metric family over its labels."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name_labels, value = line.rsplit(" ", 1)
        name = name_labels.split("{", 1)[0]
        out[name] = out.get(name, 0.0) + float(value)
    return out


async def test_one_trace_shows_the_producer_the_dispatcher_and_the_worker(
    app: DispatcherApp,
) -> None:
    spans, _ = installed()
    spans.clear()
    tracer = trace.get_tracer("test")
    address = f"127.0.0.1:{app.port}"
    async with grpc.aio.insecure_channel(address, interceptors=aio_client_interceptors()) as ch:  # type: ignore[no-untyped-call]
        stub = dispatcher_pb2_grpc.DispatcherServiceStub(ch)
        with tracer.start_as_current_span("producer") as producer:
            job = (await stub.Enqueue(pb.EnqueueRequest(job=jpb.JobSpec(queue="q", type="t")))).job
        lease = (await stub.Lease(pb.LeaseRequest(worker_id="w", queues=["q"]))).leases[0]
        assert "traceparent" in lease.job.trace_context
        parent = propagate.extract(dict(lease.job.trace_context))
        with tracer.start_as_current_span("worker: run t", context=parent):
            await stub.Ack(pb.AckRequest(items=[pb.AckItem(lease_token=lease.lease_token)]))
    trace_id = producer.get_span_context().trace_id
    in_trace = [s for s in spans.get_finished_spans() if s.context.trace_id == trace_id]
    names = {s.name for s in in_trace}
    assert {"producer", "worker: run t", "redis.enqueue"} <= names
    assert names & {"sql.transaction", "sql.insert_committed"}  # the enqueue's commit
    assert "/dispatch.v1.DispatcherService/Enqueue" in names  # the server span
    assert job.id == lease.job.id


async def test_concurrent_enqueues_sharing_a_commit_keep_their_own_trace_contexts(
    app: DispatcherApp,
) -> None:
    installed()
    tracer = trace.get_tracer("test")
    address = f"127.0.0.1:{app.port}"
    async with grpc.aio.insecure_channel(address, interceptors=aio_client_interceptors()) as ch:  # type: ignore[no-untyped-call]
        stub = dispatcher_pb2_grpc.DispatcherServiceStub(ch)

        async def produce(n: int) -> tuple[int, str]:
            with tracer.start_as_current_span(f"producer {n}") as span:
                reply = await stub.Enqueue(pb.EnqueueRequest(job=jpb.JobSpec(queue="q", type="t")))
            return span.get_span_context().trace_id, reply.job.id

        sent = await asyncio.gather(*(produce(n) for n in range(8)))
        for trace_id, job_id in sent:
            job = (await stub.GetStatus(pb.GetStatusRequest(job_id=job_id))).job
            stored = trace.get_current_span(propagate.extract(dict(job.trace_context)))
            assert stored.get_span_context().trace_id == trace_id
    assert len({t for t, _ in sent}) == 8


async def test_the_sdk_workers_handler_span_joins_the_producers_trace(
    app: DispatcherApp,
) -> None:
    import asyncio
    from datetime import timedelta

    from worker_sdk import Client, ConnectOptions, JobContext, Worker, WorkerOptions

    spans, _ = installed()
    spans.clear()
    tracer = trace.get_tracer("test")
    connect = ConnectOptions(address=f"127.0.0.1:{app.port}")
    worker = Worker(WorkerOptions(queues=("traced",), poll_wait=timedelta(seconds=1)), connect)
    inner: list[int] = []

    @worker.handler("t")
    async def handle(job: JobContext) -> None:
        with tracer.start_as_current_span("inside the handler") as span:
            inner.append(span.get_span_context().trace_id)

    async with Client(connect) as client, worker:
        with tracer.start_as_current_span("producer (sdk)") as producer:
            job = await client.enqueue("traced", "t", {})
        await asyncio.wait_for(client.result(job.id), 30)
    trace_id = producer.get_span_context().trace_id
    in_trace = {s.name: s for s in spans.get_finished_spans() if s.context.trace_id == trace_id}
    assert {"producer (sdk)", "t process", "inside the handler"} <= set(in_trace)
    assert inner == [trace_id]
    handler_span = in_trace["t process"]
    assert handler_span.kind is trace.SpanKind.CONSUMER
    assert handler_span.attributes is not None
    assert handler_span.attributes["messaging.message.id"] == job.id


async def test_health_checks_make_no_spans(app: DispatcherApp) -> None:
    spans, _ = installed()
    spans.clear()
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as ch:
        await health_pb2_grpc.HealthStub(ch).Check(  # type: ignore[attr-defined]
            health_pb2.HealthCheckRequest()
        )
    assert [s.name for s in spans.get_finished_spans() if "Health" in s.name] == []


def _moved(before: dict[str, float], after: dict[str, float]) -> Callable[[str], float]:
    """How far a scraped metric moved between two scrapes."""
    return lambda name: after.get(name, 0.0) - before.get(name, 0.0)


async def test_the_prometheus_endpoint_shows_the_counters_moving(
    app: DispatcherApp, stub: dispatcher_pb2_grpc.DispatcherServiceAsyncStub
) -> None:
    _, port = installed()
    before = _scrape(port)
    await stub.EnqueueBatch(pb.EnqueueBatchRequest(jobs=[jpb.JobSpec(queue="m", type="t")] * 3))
    leases = (await stub.Lease(pb.LeaseRequest(worker_id="w", queues=["m"], max_jobs=3))).leases
    await stub.Ack(
        pb.AckRequest(items=[pb.AckItem(lease_token=le.lease_token) for le in leases[:2]])
    )
    await stub.Nack(pb.NackRequest(items=[pb.NackItem(lease_token=leases[2].lease_token)]))
    try:
        await stub.Ack(pb.AckRequest(items=[pb.AckItem(lease_token=leases[0].lease_token + "")]))
        await stub.Heartbeat(
            pb.HeartbeatRequest(items=[pb.HeartbeatItem(lease_token=leases[0].lease_token)])
        )
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION
    after = _scrape(port)
    moved = _moved(before, after)

    assert moved("dispatcher_jobs_enqueued_total") == 3
    assert moved("dispatcher_jobs_leased_total") == 3
    assert moved("dispatcher_jobs_acked_total") == 2
    assert moved("dispatcher_jobs_nacked_total") == 1
    assert moved("dispatcher_stale_calls_refused_total") == 1
    assert moved("dispatcher_job_run_time_seconds_count") == 3
    assert moved("dispatcher_job_enqueue_to_start_seconds_count") == 3


async def test_a_job_handed_to_a_waiting_lease_is_counted_as_enqueued_and_leased(
    app: DispatcherApp, stub: dispatcher_pb2_grpc.DispatcherServiceAsyncStub
) -> None:
    _, port = installed()
    before = _scrape(port)
    waiting = asyncio.ensure_future(
        stub.Lease(pb.LeaseRequest(worker_id="w", queues=["h"], wait=Duration(seconds=20)))
    )
    await parked(app.components)
    await stub.Enqueue(pb.EnqueueRequest(job=jpb.JobSpec(queue="h", type="t")))
    assert len((await asyncio.wait_for(waiting, 20)).leases) == 1
    after = _scrape(port)
    moved = _moved(before, after)

    assert moved("dispatcher_jobs_enqueued_total") == 1
    assert moved("dispatcher_jobs_leased_total") == 1
    assert moved("dispatcher_job_enqueue_to_start_seconds_count") == 1


def test_json_logs_carry_the_job_id_queue_and_trace_id() -> None:
    import json
    import logging

    installed()
    record = logging.LogRecord(
        "dispatcher.x", logging.INFO, __file__, 1, "leased %s", ("j1",), None
    )
    record.job_id = "01J"
    record.queue = "q"
    with trace.get_tracer("test").start_as_current_span("s") as s:
        line = json.loads(telemetry.JsonFormatter().format(record))
    assert line["message"] == "leased j1" and line["job_id"] == "01J" and line["queue"] == "q"
    assert line["trace_id"] == format(s.get_span_context().trace_id, "032x")


__all__ = ["MeterProvider"]
