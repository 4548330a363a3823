"""SDK tests: a real dispatcher (grpc.aio on port 0, each backend) and SDK objects pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from dispatcher.app import DispatcherApp
from tests.api.conftest import app  # noqa: F401  (the server fixture, shared)
from worker_sdk import Client, ConnectOptions, RetryOptions


@pytest.fixture
def connect(app: DispatcherApp) -> ConnectOptions:  # noqa: F811
    # Few, quick retries: a test that fails should fail fast.
    return ConnectOptions(address=f"127.0.0.1:{app.port}", retry=RetryOptions(max_attempts=3))


@pytest.fixture
async def client(connect: ConnectOptions) -> AsyncIterator[Client]:
    async with Client(connect) as c:
        yield c
