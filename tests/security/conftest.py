"""A server with authentication required, and tokens for every case of the matrix."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from dispatcher.app import Components, DispatcherApp
from dispatcher.clock import FakeClock
from dispatcher.config import Settings
from dispatcher.service.authn import create_key
from dispatcher.store.sql import api_keys
from tests.backends import Backend


@dataclass
class Tokens:
    producer: str
    worker: str
    worker2: str
    admin: str
    other_tenant_producer: str
    other_tenant_worker: str
    other_tenant_admin: str
    revoked: str
    all_roles: str


async def _token(c: Components, ns: str, *roles: str) -> str:
    _, token = await create_key(c.runs, c.clock, ns, list(roles), "test")
    return token


@pytest.fixture
async def secured(
    backend: Backend, clock: FakeClock
) -> AsyncIterator[tuple[DispatcherApp, Tokens]]:
    settings = Settings(
        port=0, auth="required", reflection=True, reaper_interval_s=3600, reconcile_interval_s=3600
    )
    c = backend.components(clock)
    revoked_key, revoked = await create_key(
        c.runs, c.clock, "tenant-a", ["producer", "worker", "admin"], "old"
    )
    await api_keys.revoke(c.runs, revoked_key.id, clock.now_ms())
    tokens = Tokens(
        producer=await _token(c, "tenant-a", "producer"),
        worker=await _token(c, "tenant-a", "worker"),
        worker2=await _token(c, "tenant-a", "worker"),
        admin=await _token(c, "tenant-a", "admin"),
        other_tenant_producer=await _token(c, "tenant-b", "producer"),
        other_tenant_worker=await _token(c, "tenant-b", "worker"),
        other_tenant_admin=await _token(c, "tenant-b", "admin"),
        revoked=revoked,
        all_roles=await _token(c, "tenant-a", "producer", "worker", "admin"),
    )
    app = DispatcherApp(settings, c)
    await app.start()
    await app.wait_serving()
    try:
        yield app, tokens
    finally:
        await app.stop_serving(0.5)
