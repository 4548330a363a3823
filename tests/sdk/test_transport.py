"""The SDK's transport rules, against a scripted in-process servicer: retries, deadlines,
auth metadata, trace propagation, and resuming a broken update stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider

from worker_sdk import (
    Client,
    ConnectOptions,
    InvalidArgument,
    JobState,
    RetryOptions,
    Unavailable,
)
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2 as pb
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2_grpc
from worker_sdk._proto.dispatch.v1 import job_pb2 as jpb

FAST = RetryOptions(max_attempts=4, initial=timedelta(milliseconds=1), jitter=0.0)


@dataclass
class Seen:
    keys: list[str] = field(default_factory=list)
    deadlines: list[float | None] = field(default_factory=list)
    metadata: list[dict[str, str]] = field(default_factory=list)


class Scripted(dispatcher_pb2_grpc.DispatcherServiceServicer):
    """Fails Enqueue with the scripted codes, then succeeds; streams scripted updates."""

    def __init__(self, enqueue_failures: list[grpc.StatusCode], streams: list[list[int]]) -> None:
        self.failures = enqueue_failures
        self.streams = streams  # per connection: versions to send, then UNAVAILABLE if not last
        self.seen = Seen()

    async def Enqueue(self, request: Any, context: Any) -> Any:
        self.seen.keys.append(request.job.idempotency_key)
        self.seen.deadlines.append(context.time_remaining())
        self.seen.metadata.append({k: v for k, v in context.invocation_metadata()})
        if self.failures:
            await context.abort(self.failures.pop(0), "scripted failure")
        return pb.EnqueueResponse(job=jpb.Job(id="j1", queue="q"), created=True)

    async def StreamUpdates(self, request: Any, context: Any) -> AsyncIterator[Any]:
        versions = self.streams.pop(0)
        for v in versions:
            state = (
                jpb.JOB_STATE_SUCCEEDED
                if v == 3
                else jpb.JobState.ValueType(jpb.JOB_STATE_QUEUED + v - 1)
            )
            yield pb.StreamUpdatesResponse(job_id="j1", version=v, state=state)
        if self.streams:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the replica went away")


@pytest.fixture
async def scripted(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Scripted, int]]:
    failures, streams = request.param
    # The .pyi marks every RPC abstract; at runtime the base answers UNIMPLEMENTED.
    servicer = Scripted(list(failures), [list(s) for s in streams])  # type: ignore[abstract]
    server = grpc.aio.server()
    dispatcher_pb2_grpc.add_DispatcherServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, port
    finally:
        await server.stop(0)


def _client(port: int, **kw: Any) -> Client:
    return Client(ConnectOptions(address=f"127.0.0.1:{port}", retry=FAST, **kw))


UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("scripted", [([UNAVAILABLE, UNAVAILABLE], [])], indirect=True)
async def test_an_enqueue_retried_after_unavailable_reuses_its_idempotency_key(
    scripted: tuple[Scripted, int],
) -> None:
    servicer, port = scripted
    async with _client(port) as client:
        job = await client.enqueue("q", "t", {})
    assert job.id == "j1"
    assert len(servicer.seen.keys) == 3
    assert len(set(servicer.seen.keys)) == 1 and servicer.seen.keys[0]


@pytest.mark.parametrize(
    "scripted", [([grpc.StatusCode.INVALID_ARGUMENT, UNAVAILABLE], [])], indirect=True
)
async def test_a_code_outside_the_allow_list_is_not_retried(
    scripted: tuple[Scripted, int],
) -> None:
    servicer, port = scripted
    async with _client(port) as client:
        with pytest.raises(InvalidArgument):
            await client.enqueue("q", "t", {})
    assert len(servicer.seen.keys) == 1


@pytest.mark.parametrize("scripted", [([UNAVAILABLE] * 10, [])], indirect=True)
async def test_retries_stop_after_max_attempts_with_the_last_error(
    scripted: tuple[Scripted, int],
) -> None:
    servicer, port = scripted
    async with _client(port) as client:
        with pytest.raises(Unavailable):
            await client.enqueue("q", "t", {})
    assert len(servicer.seen.keys) == FAST.max_attempts


@pytest.mark.parametrize("scripted", [([], [])], indirect=True)
async def test_every_call_carries_a_deadline_the_token_and_the_callers_trace(
    scripted: tuple[Scripted, int],
) -> None:
    servicer, port = scripted
    tracer = TracerProvider().get_tracer("test")
    async with _client(port, token="dsp_x_secret", timeout=timedelta(seconds=7)) as client:
        with tracer.start_as_current_span("producer") as span:
            await client.enqueue("q", "t", {})
    (deadline,) = servicer.seen.deadlines
    assert deadline is not None and 0 < deadline <= 7.1  # grpc-timeout is rounded on the wire
    (metadata,) = servicer.seen.metadata
    assert metadata["authorization"] == "Bearer dsp_x_secret"
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert trace_id in metadata["traceparent"]


def test_a_token_is_never_sent_in_plaintext_off_loopback() -> None:
    client = Client(ConnectOptions(address="dispatcher.example.com:50051", token="dsp_x_y"))
    with pytest.raises(ValueError, match="plaintext"):
        _ = client.raw


@pytest.mark.parametrize("scripted", [([], [[1, 2], [2, 3]])], indirect=True)
async def test_a_broken_update_stream_resumes_without_a_gap_or_a_repeat(
    scripted: tuple[Scripted, int],
) -> None:
    _, port = scripted
    async with _client(port) as client:
        updates = [u async for u in client.updates(["j1"])]
    assert [u.version for u in updates] == [1, 2, 3]
    assert [u.state for u in updates] == [JobState.QUEUED, JobState.SCHEDULED, JobState.SUCCEEDED]
