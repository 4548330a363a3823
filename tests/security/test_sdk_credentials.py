"""The SDK sends tokens and speaks TLS and mutual TLS to a secured dispatcher."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
import trustme

from dispatcher.app import DispatcherApp
from dispatcher.clock import FakeClock
from tests.backends import Backend
from tests.security.conftest import Tokens
from tests.security.test_tls import _serve, _write, stop_later  # noqa: F401 (fixture)
from worker_sdk import (
    Client,
    ConnectOptions,
    JobContext,
    PermissionDenied,
    RetryOptions,
    Unauthenticated,
    Unavailable,
    Worker,
    WorkerOptions,
)

NO_RETRY = RetryOptions(max_attempts=1)


async def test_a_producer_token_enqueues_and_a_worker_token_works_the_job(
    secured: tuple[DispatcherApp, Tokens],
) -> None:
    app, tokens = secured
    address = f"127.0.0.1:{app.port}"
    producer = ConnectOptions(address=address, namespace="tenant-a", token=tokens.producer)
    worker = Worker(
        WorkerOptions(queues=("q",), poll_wait=timedelta(seconds=1)),
        ConnectOptions(address=address, namespace="tenant-a", token=tokens.worker),
    )

    @worker.handler("t")
    async def handle(job: JobContext) -> str:
        return "ok"

    async with Client(producer) as client, worker:
        job = await client.enqueue("q", "t", {})
        done = await asyncio.wait_for(client.result(job.id), 30)
    assert done.result_json() == "ok"


async def test_without_a_token_or_with_the_wrong_role_the_sdk_raises_the_matching_error(
    secured: tuple[DispatcherApp, Tokens],
) -> None:
    app, tokens = secured
    address = f"127.0.0.1:{app.port}"
    async with Client(ConnectOptions(address=address, retry=NO_RETRY)) as anonymous:
        with pytest.raises(Unauthenticated):
            await anonymous.enqueue("q", "t", {})
    as_worker = ConnectOptions(
        address=address, namespace="tenant-a", token=tokens.worker, retry=NO_RETRY
    )
    async with Client(as_worker) as client:
        with pytest.raises(PermissionDenied):
            await client.enqueue("q", "t", {})


async def test_the_sdk_connects_over_mutual_tls_with_its_client_certificate(
    backend: Backend,
    clock: FakeClock,
    tmp_path: Path,
    stop_later: list[DispatcherApp],  # noqa: F811
) -> None:
    ca = trustme.CA()
    cert, key = _write(ca.issue_cert("localhost"), tmp_path)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    app = await _serve(backend, clock, tls_cert=cert, tls_key=key, tls_client_ca=str(ca_file))
    stop_later.append(app)
    client_cert = ca.issue_cert("worker-1")
    cert_file, key_file = tmp_path / "client.pem", tmp_path / "client.key"
    cert_file.write_bytes(b"".join(b.bytes() for b in client_cert.cert_chain_pems))
    key_file.write_bytes(client_cert.private_key_pem.bytes())
    address = f"localhost:{app.port}"
    mtls = ConnectOptions(
        address=address, tls_ca=str(ca_file), tls_cert=str(cert_file), tls_key=str(key_file)
    )
    async with Client(mtls) as client:
        job = await client.enqueue("q", "t", {})
        assert (await client.get(job.id)).id == job.id
    server_only = ConnectOptions(address=address, tls_ca=str(ca_file), retry=NO_RETRY)
    async with Client(server_only) as client:
        with pytest.raises(Unavailable):
            await client.enqueue("q", "t", {})
