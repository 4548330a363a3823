"""The worker's per-job work: a leased proto Job becomes the SDK's Job, and the
handler runs in the producer's trace whether or not a tracer provider is set."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from opentelemetry import propagate, trace

from worker_sdk import Job, JobContext, JobState, Priority, Progress
from worker_sdk._convert import job
from worker_sdk._proto.dispatch.v1 import job_pb2 as jpb
from worker_sdk.worker import _job_span

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
SPAN_ID = 0x00F067AA0BA902B7
TRACEPARENT = f"00-{TRACE_ID:032x}-{SPAN_ID:016x}-01"


def _ts(seconds: int, nanos: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


def _full_proto_job() -> jpb.Job:
    return jpb.Job(
        id="01JCONVERT0000000000000001",
        queue="q",
        type="t",
        payload=b'{"to": "ada"}',
        attempt=2,
        state=jpb.JOB_STATE_LEASED,
        priority=jpb.PRIORITY_HIGH,
        metadata={"tenant": "a"},
        trace_context={"traceparent": TRACEPARENT},
        progress=jpb.Progress(percent=12.5, message="half"),
        create_time=_ts(1_700_000_000, 123_456_789),
        start_time=_ts(1_700_000_001, 999_999_999),
        lease_duration=duration_pb2.Duration(seconds=30, nanos=500_000_000),
        depends_on=["01JCONVERT0000000000000000"],
    )


def test_a_leased_job_keeps_its_maps_progress_times_and_lease_duration() -> None:
    converted = job(_full_proto_job())
    assert converted.state is JobState.LEASED and converted.priority is Priority.HIGH
    assert converted.metadata == {"tenant": "a"}
    assert converted.trace_context == {"traceparent": TRACEPARENT}
    assert converted.progress == Progress(12.5, "half")
    # The same instants Timestamp.ToDatetime gives, to the microsecond.
    assert converted.created_at == datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=UTC)
    assert converted.created_at == _ts(1_700_000_000, 123_456_789).ToDatetime(tzinfo=UTC)
    assert converted.started_at == _ts(1_700_000_001, 999_999_999).ToDatetime(tzinfo=UTC)
    assert converted.finished_at is None and converted.next_run_at is None
    assert converted.lease_duration == timedelta(seconds=30.5)
    assert converted.depends_on == ("01JCONVERT0000000000000000",)


def test_a_job_without_maps_or_progress_gets_empty_ones_of_its_own() -> None:
    first, second = job(jpb.Job(id="a")), job(jpb.Job(id="b"))
    assert first.metadata == {} and first.trace_context == {}
    assert first.progress == Progress(0.0, "")
    assert first.metadata is not second.metadata  # a caller may change its copy
    assert first.lease_duration is None and first.created_at is None


def test_a_converted_job_sets_every_field_of_job_and_nothing_else() -> None:
    converted = job(_full_proto_job())
    assert set(vars(converted)) == {f.name for f in dataclasses.fields(Job)}
    assert converted == dataclasses.replace(converted)  # what __init__ makes of the same
    with pytest.raises(dataclasses.FrozenInstanceError):
        converted.queue = "other"  # type: ignore[misc]


def _current_trace_id() -> int:
    return trace.get_current_span().get_span_context().trace_id


def test_a_leased_jobs_context_answers_from_the_proto_and_converts_the_job_once() -> None:
    proto = _full_proto_job()
    context = JobContext._of_lease(proto, "w1")
    assert context._job is None  # nothing converted for id, type, attempt or payload
    assert (context.id, context.type, context.attempt) == (proto.id, proto.type, proto.attempt)
    assert (context.payload, context.json()) == (proto.payload, {"to": "ada"})
    assert context._job is None
    assert context.job == job(proto)
    assert context.job is context.job  # converted once
    made = JobContext(job(proto), "w1")  # the public constructor, for handlers' own tests
    assert (made.id, made.type, made.attempt, made.payload, made.json()) == (
        context.id, context.type, context.attempt, context.payload, context.json()
    )  # fmt: skip


def test_without_a_tracer_provider_the_handler_runs_in_the_producers_trace() -> None:
    leased = JobContext._of_lease(_full_proto_job(), "w1")
    for provider in (trace.NoOpTracerProvider(), trace.ProxyTracerProvider()):
        with _job_span(leased, provider):
            assert _current_trace_id() == TRACE_ID
            carrier: dict[str, str] = {}
            propagate.inject(carrier)  # what a call made by the handler would carry
            assert f"{TRACE_ID:032x}" in carrier["traceparent"]
        assert _current_trace_id() == 0  # detached again


def test_a_job_without_a_trace_context_runs_outside_any_trace() -> None:
    with _job_span(JobContext._of_lease(jpb.Job(id="a"), "w1"), trace.NoOpTracerProvider()):
        assert not trace.get_current_span().get_span_context().is_valid
