"""The dispatcher on a Redis that requires TLS and an ACL user confined to its key prefix."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import trustme

from dispatcher.app import DispatcherApp
from dispatcher.config import Settings
from tests.e2e.conftest import free_port
from worker_sdk import Client, JobState
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2 as pb

pytestmark = pytest.mark.slow


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[str]:
    """A redis-server on TLS only, whose one user may touch `dsp:*` keys and channels."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    (tmp_path / "cert.pem").write_bytes(b"".join(b.bytes() for b in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(tmp_path / "cert.pem"), "--tls-key-file", str(tmp_path / "key.pem"),
         "--tls-ca-cert-file", str(tmp_path / "ca.pem"), "--tls-auth-clients", "no",
         "--user", "default", "off",
         "--user", "dispatcher", "on", ">s3cret", "~dsp:*", "&dsp:*", "+@all",
         "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"rediss://dispatcher:s3cret@127.0.0.1:{port}/0?ssl_ca_certs={tmp_path / 'ca.pem'}"
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.from_url(url).ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


async def test_the_dispatcher_works_over_tls_as_an_acl_user_confined_to_its_prefix(
    tls_redis: str, tmp_path: Path
) -> None:
    with pytest.raises(redis.exceptions.NoPermissionError):
        redis.from_url(tls_redis).set("outside-the-prefix", 1)  # the ACL does bite
    settings = Settings(
        port=0, database_url=f"sqlite:///{tmp_path / 'd.db'}", redis_url=tls_redis,
        redis_prefix="dsp",
    )  # fmt: skip
    app = DispatcherApp(settings)
    await app.start()
    try:
        await app.wait_serving()
        async with Client(f"127.0.0.1:{app.port}") as client:
            job = await client.enqueue("q", "t", {"over": "tls"})
            reply = await client.raw.Lease(
                pb.LeaseRequest(worker_id="w", queues=["q"], max_jobs=1), timeout=10
            )
            (lease,) = reply.leases
            await client.raw.Ack(
                pb.AckRequest(items=[pb.AckItem(lease_token=lease.lease_token)]), timeout=10
            )
            assert (await client.get(job.id)).state is JobState.SUCCEEDED
    finally:
        await app.stop(0.5)
