"""TLS and mutual TLS on the gRPC listener, and certificate rotation without a restart."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TypedDict, Unpack

import grpc
import pytest
import trustme

from dispatcher.app import DispatcherApp
from dispatcher.clock import FakeClock
from dispatcher.config import Settings
from tests.backends import Backend
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2 as pb
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2_grpc


def _write(cert: trustme.LeafCert, folder: Path) -> tuple[str, str]:
    chain, key = folder / "server.pem", folder / "server.key"
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    key.write_bytes(cert.private_key_pem.bytes())
    return str(chain), str(key)


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


class _Tls(TypedDict, total=False):
    tls_cert: str
    tls_key: str
    tls_client_ca: str


async def _serve(backend: Backend, clock: FakeClock, **tls: Unpack[_Tls]) -> DispatcherApp:
    app = DispatcherApp(
        Settings(port=0, reaper_interval_s=3600, reconcile_interval_s=3600, **tls),
        backend.components(clock),
    )
    await app.start()
    await app.wait_serving()
    return app


@pytest.fixture
async def stop_later() -> AsyncIterator[list[DispatcherApp]]:
    apps: list[DispatcherApp] = []
    yield apps
    for app in apps:
        await app.stop_serving(0.2)


async def _status(channel: grpc.aio.Channel) -> grpc.StatusCode:
    stub = dispatcher_pb2_grpc.DispatcherServiceStub(channel)
    try:
        await stub.Lease(pb.LeaseRequest(worker_id="w", queues=["q"]), timeout=3)
        return grpc.StatusCode.OK
    except grpc.aio.AioRpcError as exc:
        return exc.code()


def _tls_channel(
    app: DispatcherApp, ca: trustme.CA, client: trustme.LeafCert | None = None
) -> grpc.aio.Channel:
    key = client.private_key_pem.bytes() if client else None
    chain = b"".join(b.bytes() for b in client.cert_chain_pems) if client else None
    creds = grpc.ssl_channel_credentials(ca.cert_pem.bytes(), key, chain)
    return grpc.aio.secure_channel(f"localhost:{app.port}", creds)


async def test_a_tls_listener_serves_tls_clients_and_refuses_plaintext(
    backend: Backend,
    clock: FakeClock,
    ca: trustme.CA,
    tmp_path: Path,
    stop_later: list[DispatcherApp],
) -> None:
    cert, key = _write(ca.issue_cert("localhost"), tmp_path)
    app = await _serve(backend, clock, tls_cert=cert, tls_key=key)
    stop_later.append(app)
    async with _tls_channel(app, ca) as ch:
        assert await _status(ch) == grpc.StatusCode.OK
    async with grpc.aio.insecure_channel(f"localhost:{app.port}") as ch:
        assert await _status(ch) == grpc.StatusCode.UNAVAILABLE
    async with _tls_channel(app, trustme.CA()) as ch:  # a server we do not trust
        assert await _status(ch) == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_requires_a_client_certificate_from_the_trusted_ca(
    backend: Backend,
    clock: FakeClock,
    ca: trustme.CA,
    tmp_path: Path,
    stop_later: list[DispatcherApp],
) -> None:
    cert, key = _write(ca.issue_cert("localhost"), tmp_path)
    client_ca = tmp_path / "clients.pem"
    ca.cert_pem.write_to_path(str(client_ca))
    app = await _serve(backend, clock, tls_cert=cert, tls_key=key, tls_client_ca=str(client_ca))
    stop_later.append(app)
    async with _tls_channel(app, ca) as ch:
        assert await _status(ch) == grpc.StatusCode.UNAVAILABLE  # no client certificate
    async with _tls_channel(app, ca, trustme.CA().issue_cert("worker-1")) as ch:
        assert await _status(ch) == grpc.StatusCode.UNAVAILABLE  # foreign CA
    async with _tls_channel(app, ca, ca.issue_cert("worker-1")) as ch:
        assert await _status(ch) == grpc.StatusCode.OK


async def test_new_certificate_files_are_picked_up_without_a_restart(
    backend: Backend,
    clock: FakeClock,
    ca: trustme.CA,
    tmp_path: Path,
    stop_later: list[DispatcherApp],
) -> None:
    cert, key = _write(ca.issue_cert("localhost"), tmp_path)
    app = await _serve(backend, clock, tls_cert=cert, tls_key=key)
    stop_later.append(app)
    new_ca = trustme.CA()
    staging = tmp_path / "new"
    staging.mkdir()
    new_cert, new_key = _write(new_ca.issue_cert("localhost"), staging)
    shutil.copy(new_key, key)
    shutil.copy(new_cert, cert)
    import os

    os.utime(cert, (os.stat(cert).st_atime, os.stat(cert).st_mtime + 5))  # a visible change
    async with _tls_channel(app, new_ca) as ch:
        assert await _status(ch) == grpc.StatusCode.OK
