"""A real grpc.aio server on port 0 over each backend, and a generated stub."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from dispatcher.app import DispatcherApp
from dispatcher.clock import FakeClock
from dispatcher.config import Settings
from tests.backends import Backend
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2_grpc


@pytest.fixture
async def app(backend: Backend, clock: FakeClock) -> AsyncIterator[DispatcherApp]:
    settings = Settings(port=0, reaper_interval_s=3600, reconcile_interval_s=3600)
    a = DispatcherApp(settings, backend.components(clock))
    await a.start()
    await a.wait_serving()
    try:
        yield a
    finally:
        await a.stop_serving(0.5)


@pytest.fixture
async def channel(app: DispatcherApp) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as ch:
        yield ch


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> dispatcher_pb2_grpc.DispatcherServiceAsyncStub:
    return dispatcher_pb2_grpc.DispatcherServiceStub(channel)
