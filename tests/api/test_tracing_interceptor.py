"""With no tracer provider installed, the server makes no spans but still makes the
caller's trace context current for the handler (what Enqueue stores with a job).
With one installed, OpenTelemetry's interceptor makes the server span: that path
is tested end to end in test_telemetry.py."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import grpc
import pytest

from dispatcher import telemetry
from dispatcher.api.tracing import TracingInterceptor

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"


async def _context_of_call(
    request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
) -> bytes:
    return json.dumps(telemetry.current_trace_context()).encode()


async def _context_per_message(
    request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
) -> AsyncIterator[bytes]:
    for _ in range(2):
        yield json.dumps(telemetry.current_trace_context()).encode()


@pytest.fixture
async def untraced_server() -> AsyncIterator[grpc.aio.Channel]:
    """A server whose TracingInterceptor sees no tracer provider, and a channel to it."""
    server = grpc.aio.server(interceptors=[TracingInterceptor(tracing_on=lambda: False)])
    handlers: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {
        "Unary": grpc.unary_unary_rpc_method_handler(_context_of_call),
        "Stream": grpc.unary_stream_rpc_method_handler(_context_per_message),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.T", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel
    await server.stop(None)


async def test_without_a_tracer_provider_a_unary_handler_runs_in_the_callers_trace(
    untraced_server: grpc.aio.Channel,
) -> None:
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = untraced_server.unary_unary("/t.T/Unary")

    reply = await call(b"", metadata=(("traceparent", TRACEPARENT),))

    assert TRACE_ID in json.loads(reply)["traceparent"]


async def test_without_a_tracer_provider_a_streaming_handler_runs_in_the_callers_trace(
    untraced_server: grpc.aio.Channel,
) -> None:
    call: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = untraced_server.unary_stream(
        "/t.T/Stream"
    )

    replies = [json.loads(m) async for m in call(b"", metadata=(("traceparent", TRACEPARENT),))]

    assert len(replies) == 2
    assert all(TRACE_ID in r["traceparent"] for r in replies)


async def test_a_call_without_trace_headers_runs_in_no_trace(
    untraced_server: grpc.aio.Channel,
) -> None:
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = untraced_server.unary_unary("/t.T/Unary")

    first = await call(b"", metadata=(("traceparent", TRACEPARENT),))
    second = await call(b"")

    assert TRACE_ID in json.loads(first)["traceparent"]
    assert json.loads(second) == {}
