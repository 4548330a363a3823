"""Webhooks wired into the server: the Enqueue guard and the background sender."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING

import grpc
import pytest

from dispatcher.app import DispatcherApp
from dispatcher.clock import FakeClock
from dispatcher.config import Settings
from dispatcher.domain import webhook_signing
from tests.api.test_errors import _error
from tests.backends import Backend
from tests.service.receiver import Receiver
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2 as pb
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2_grpc
from worker_sdk._proto.dispatch.v1 import job_pb2 as jpb

SECRET = webhook_signing.new_secret()
if TYPE_CHECKING:
    from worker_sdk._proto.dispatch.v1.dispatcher_pb2_grpc import DispatcherServiceAsyncStub as Stub

    Server = Callable[..., AbstractAsyncContextManager[Stub]]


@pytest.fixture
def server(backend: Backend, clock: FakeClock) -> Server:
    @asynccontextmanager
    async def start(**webhook_settings: object) -> AsyncIterator[Stub]:
        settings = Settings(
            port=0,
            reaper_interval_s=3600,
            reconcile_interval_s=3600,
            **webhook_settings,  # type: ignore[arg-type]
        )
        app = DispatcherApp(settings, backend.components(clock))
        await app.start()
        await app.wait_serving()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
                yield dispatcher_pb2_grpc.DispatcherServiceStub(channel)
        finally:
            await app.stop_serving(0.5)

    return start


def job(url: str) -> jpb.JobSpec:
    return jpb.JobSpec(queue="q", type="t", callback_url=url)


async def test_without_a_webhook_secret_a_callback_url_is_refused_at_enqueue(
    server: Server,
) -> None:
    async with server() as stub:
        code, _, fields, message = await _error(
            stub.Enqueue(pb.EnqueueRequest(job=job("https://hooks.example.com/x")))
        )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert fields == ["job.callback_url"] and "not enabled" in message


async def test_a_callback_url_to_a_private_address_is_invalid_argument_at_enqueue(
    server: Server,
) -> None:
    async with server(webhook_secret=SECRET) as stub:
        code, _, fields, message = await _error(
            stub.Enqueue(pb.EnqueueRequest(job=job("https://10.0.0.1/hook")))
        )
        batch = await stub.EnqueueBatch(
            pb.EnqueueBatchRequest(
                jobs=[job("https://192.168.0.1/"), jpb.JobSpec(queue="q", type="t")]
            )
        )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert fields == ["job.callback_url"] and "internal address" in message
    assert batch.results[0].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert batch.results[1].job.id


async def test_the_server_delivers_a_signed_webhook_when_a_job_finishes(
    server: Server, clock: FakeClock
) -> None:
    settings = {"webhook_secret": SECRET, "webhook_allow_private": True}
    async with Receiver() as receiver, server(**settings) as stub:
        await stub.Enqueue(pb.EnqueueRequest(job=job(receiver.url)))
        lease = (await stub.Lease(pb.LeaseRequest(worker_id="w", queues=["q"]))).leases[0]
        await stub.Ack(pb.AckRequest(items=[pb.AckItem(lease_token=lease.lease_token)]))
        async with asyncio.timeout(10):
            while not receiver.received:
                await asyncio.sleep(0.05)
    (got,) = receiver.received
    keys = webhook_signing.parse_secrets(SECRET)
    webhook_signing.verify(keys, got.headers, got.body, clock.now_ms() // 1000)
    assert json.loads(got.body)["data"]["job_id"] == lease.job.id
