"""The composition root: builds the stores, services and gRPC server, and runs them.

Startup order: migrate (if enabled), connect, start listening with health
NOT_SERVING, rebuild the Redis index from SQL if it is missing, then SERVING.
Shutdown order (SIGTERM): stop granting leases and end long-polls empty, let
in-flight calls finish within the grace period, stop background loops, close.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field
from typing import Any

import fakeredis
import grpc
import redis.asyncio as redis_asyncio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from dispatcher.api import tls
from dispatcher.api.admin_servicer import AdminServicer
from dispatcher.api.auth import AuthInterceptor
from dispatcher.api.errors import ErrorInterceptor
from dispatcher.api.schedule_servicer import ScheduleServicer
from dispatcher.api.servicer import DispatcherServicer
from dispatcher.api.tracing import TracingInterceptor
from dispatcher.clock import Clock, RedisClock
from dispatcher.config import Settings
from dispatcher.domain.errors import DispatchError
from dispatcher.domain.limits import Limits
from dispatcher.service import (
    listener,
    queues,
    quotas,
    reaper,
    reconcile,
    retention,
    schedules,
    webhooks,
    workers,
)
from dispatcher.service.admin import Admin
from dispatcher.service.authn import Authenticator
from dispatcher.service.depth import sample_depth_forever
from dispatcher.service.dispatch import Dispatcher
from dispatcher.service.index_behind import IndexBehind
from dispatcher.service.queues import QueueControl
from dispatcher.service.quotas import Quotas
from dispatcher.service.retention import RetentionSweeper
from dispatcher.service.schedules import ScheduleFirer, Schedules
from dispatcher.service.state import Phase, ServingState
from dispatcher.service.updates import UpdateHub, UpdateStreams
from dispatcher.service.wakeups import Waiters
from dispatcher.service.workers import WorkerRegistry
from dispatcher.store.redis.index import RedisIndex
from dispatcher.store.redis.keys import Keys
from dispatcher.store.sql.engine import create_engine
from dispatcher.store.sql.maintenance import autovacuum_gaps
from dispatcher.store.sql.migrate import upgrade_async
from dispatcher.store.sql.runs import RunStore
from worker_sdk._proto.dispatch.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    dispatcher_pb2,
    dispatcher_pb2_grpc,
    schedule_pb2,
    schedule_pb2_grpc,
)

logger = logging.getLogger(__name__)

SERVICE_NAME = dispatcher_pb2.DESCRIPTOR.services_by_name["DispatcherService"].full_name
LIVENESS = "liveness"
ADMIN_SERVICE_NAME = admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name
SCHEDULE_SERVICE_NAME = schedule_pb2.DESCRIPTOR.services_by_name["ScheduleService"].full_name
CLOCK_SYNC_S = 10.0


async def _warn_without_autovacuum(runs: RunStore) -> None:
    try:
        gaps = await autovacuum_gaps(runs.engine)
    except DispatchError as exc:  # the database may be down: serve anyway
        logger.info("could not check PostgreSQL's autovacuum settings: %s", exc)
        return
    if gaps:
        logger.warning(
            "PostgreSQL will not vacuum or analyze the job tables by itself (%s): runs "
            "bloats, and query plans made while it was small are kept as it grows, so "
            "leases, acks and the reaper slow down with every job it holds. Turn "
            "autovacuum on, or run VACUUM ANALYZE runs, run_events regularly "
            "(docs/architecture.md, PostgreSQL maintenance).",
            "; ".join(gaps),
        )


def make_redis(settings: Settings, fake_server: Any = None) -> Any:
    if settings.embedded_redis:
        return fakeredis.FakeAsyncRedis(
            server=fake_server or fakeredis.FakeServer(), decode_responses=True
        )
    return redis_asyncio.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_connect_timeout=2,
        socket_timeout=10,
        health_check_interval=30,
    )


@dataclass
class Components:
    """Everything one replica runs, wired together; tests build these directly."""

    runs: RunStore
    index: RedisIndex
    clock: Clock
    limits: Limits = field(default_factory=Limits)
    state: ServingState = field(default_factory=ServingState)
    waiters: Waiters = field(default_factory=Waiters)
    hub: UpdateHub = field(default_factory=UpdateHub)

    def __post_init__(self) -> None:
        self.workers = WorkerRegistry(self.index, self.clock)
        self.index_behind = IndexBehind(self.index, self.waiters, self.state)
        self.queues = QueueControl(self.runs, self.index, self.clock, behind=self.index_behind)
        self.quotas = Quotas(self.runs, self.index, self.clock)
        self.dispatcher = Dispatcher(
            self.runs,
            self.index,
            self.clock,
            self.limits,
            self.state,
            self.waiters,
            random.Random(),
            workers=self.workers,
            queues=self.queues,
            quotas=self.quotas,
            behind=self.index_behind,
        )
        self.retention = RetentionSweeper(
            self.runs, self.limits.retention_ms, calls_window_ms=self.limits.idempotency_window_ms
        )
        self.schedules = Schedules(self.runs, self.dispatcher, self.clock)
        self.schedule_firer = ScheduleFirer(self.schedules.store, self.dispatcher)
        self.admin = Admin(
            self.runs, self.index, self.clock, self.waiters, self.queues, self.index_behind
        )
        self.streams = UpdateStreams(self.runs, self.hub, self.limits)
        self.reaper = reaper.Reaper(self.runs, self.index, self.waiters)
        self.reconciler = reconcile.Reconciler(
            self.runs,
            self.index,
            self.clock,
            self.state,
            self.waiters,
            also_rebuild=[self.queues.refresh, self.quotas.refresh],
        )

    async def finish_writes(self) -> None:
        """Return once the writes made after answering (index writes, update
        notices) have landed: before whoever owns Redis closes it."""
        await self.index_behind.caught_up()
        await self.dispatcher.late_notices.flush()


# How long stopping waits for the background loops once they are cancelled.
TASKS_STOP_WITHIN_S = 10.0


async def stop_tasks(tasks: list[asyncio.Task[None]], within_s: float) -> None:
    """Cancel the background loops and wait for them, but not forever: a loop
    that lost its cancellation (a client library can swallow one that arrives
    with a message) would otherwise hang shutdown. One still running after
    `within_s` is logged with where it stands and left behind."""
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    done, pending = await asyncio.wait(tasks, timeout=within_s)
    for task in done:
        if not task.cancelled():
            # Retrieved and dropped, as gather(return_exceptions=True) did before;
            # unretrieved, asyncio would report it when the task is collected.
            task.exception()
    for task in pending:
        frames = "; ".join(f"{f.f_code.co_name}:{f.f_lineno}" for f in task.get_stack())
        logger.warning("background task %s did not stop within %.0fs (at %s)",
                       task.get_name(), within_s, frames or "?")  # fmt: skip


class DispatcherApp:
    """One running replica: server plus background loops."""

    def __init__(self, settings: Settings, components: Components | None = None) -> None:
        self.settings = settings
        self._components = components
        self._tasks: list[asyncio.Task[None]] = []
        self.tasks_stop_within_s = TASKS_STOP_WITHIN_S
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self.health = health.aio.HealthServicer()
        self.webhooks: webhooks.WebhookSender | None = None

    @property
    def components(self) -> Components:
        assert self._components is not None, "start() first"
        return self._components

    async def _build(self) -> Components:
        s = self.settings
        if s.auto_migrate:
            await upgrade_async(s.database_url)
        client = make_redis(s)
        clock = RedisClock()
        index = RedisIndex(client, Keys(s.redis_prefix))
        runs = RunStore(create_engine(s.database_url))
        await _warn_without_autovacuum(runs)
        return Components(runs=runs, index=index, clock=clock, limits=s.limits())

    async def start(self) -> int:
        """Start serving; returns the bound port. The index rebuild runs in the background."""
        if self._components is None:
            self._components = await self._build()
        c = self.components
        s = self.settings
        self.webhooks = webhooks.enable(
            c.dispatcher,
            c.runs,
            s.webhook_secret,
            s.webhook_allow_private,
            s.webhook_timeout_s,
            s.webhook_ports,
        )
        options = [
            ("grpc.max_receive_message_length", s.max_message_bytes),
            ("grpc.max_send_message_length", s.max_message_bytes),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
            # Long-lived worker connections rebalance across replicas every half hour;
            # the grace outlasts the longest long-poll (30 s), so none is cut short.
            ("grpc.max_connection_age_ms", 30 * 60_000),
            ("grpc.max_connection_age_grace_ms", 60_000),
            ("grpc.max_connection_idle_ms", 10 * 60_000),
            ("grpc.http2.max_ping_strikes", 2),
            ("grpc.max_metadata_size", 16 * 1024),
        ]
        # Tracing outermost, so that the span sees the status the error mapping sets.
        interceptors: list[grpc.aio.ServerInterceptor] = [TracingInterceptor(), ErrorInterceptor()]
        if s.auth_required:
            authn = Authenticator(c.runs, c.clock)
            interceptors.append(AuthInterceptor(authn, reflection_open=s.reflection_on))
        server = grpc.aio.server(
            interceptors=interceptors,
            options=options,
            maximum_concurrent_rpcs=s.max_concurrent_rpcs,
        )
        dispatcher_pb2_grpc.add_DispatcherServiceServicer_to_server(
            DispatcherServicer(c.dispatcher, c.streams), server
        )
        admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(c.admin, c.quotas), server)
        schedule_pb2_grpc.add_ScheduleServiceServicer_to_server(
            ScheduleServicer(c.schedules), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        if s.reflection_on:
            names = (
                SERVICE_NAME,
                ADMIN_SERVICE_NAME,
                SCHEDULE_SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            )
            reflection.enable_server_reflection(names, server)
        self.port = tls.bind(server, s)
        if not s.auth_required:  # after binding: with --port 0 the port is known only now
            logger.warning(
                "AUTHENTICATION IS OFF: anyone who can reach %s:%s may call every RPC "
                "(fine for local development on loopback only)",
                s.host,
                self.port,
            )
        await self._set_health(False)
        # "liveness" answers SERVING while the process runs, whatever its stores do:
        # for a liveness probe, which should restart a wedged process, not an outage.
        await self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        await server.start()
        self.server = server
        self._tasks = [
            asyncio.create_task(self._sync_clock()),
            asyncio.create_task(
                reconcile.run_forever(c.reconciler, c.state, s.reconcile_interval_s)
            ),
            asyncio.create_task(
                reaper.run_forever(c.reaper, c.clock, c.state, s.reaper_interval_s)
            ),
            asyncio.create_task(listener.listen_forever(c.index, c.waiters, c.hub, c.state)),
            asyncio.create_task(self._report_health()),
            asyncio.create_task(workers.flush_forever(c.workers)),
            asyncio.create_task(sample_depth_forever(c.index, c.clock)),
            asyncio.create_task(queues.refresh_forever(c.queues)),
            asyncio.create_task(quotas.refresh_forever(c.quotas)),
            asyncio.create_task(retention.run_forever(c.retention, c.clock)),
            asyncio.create_task(schedules.run_forever(c.schedule_firer, c.clock, c.state)),
        ]
        if self.webhooks is not None:
            sender = webhooks.run_forever(self.webhooks, c.clock, c.state)
            self._tasks.append(asyncio.create_task(sender))
        return self.port

    async def wait_serving(self, within_s: float = 30.0) -> None:
        """Wait until the index is built and the replica serves."""
        async with asyncio.timeout(within_s):
            # Polled: serving depends on several flags that are set in several places.
            while not self.components.state.serving:  # noqa: ASYNC110
                await asyncio.sleep(0.02)

    async def _sync_clock(self) -> None:
        c = self.components
        while not c.state.draining.is_set():
            if isinstance(c.clock, RedisClock):
                try:
                    c.clock.set_reference(await c.index.time_ms())
                except DispatchError:
                    pass  # keep extrapolating from the last reading
            await asyncio.sleep(CLOCK_SYNC_S)

    async def _set_health(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self.health.set("", status)
        await self.health.set(SERVICE_NAME, status)

    async def _report_health(self) -> None:
        state = self.components.state
        last: bool | None = None
        while True:
            serving = state.serving
            if serving != last:
                await self._set_health(serving)
                last = serving
            await asyncio.sleep(0.05)

    async def stop(self, grace: float | None = None) -> None:
        """Drain and stop: no new leases, long-polls end empty, in-flight calls finish."""
        await self.stop_serving(grace)
        await self.close()

    async def stop_serving(self, grace: float | None = None) -> None:
        """`stop` without closing the stores (their owner closes them).

        Background loops are awaited after their cancellation: a loop cancelled
        in a transaction must finish rolling back before the engine goes away.
        """
        c = self.components
        c.state.start_draining()  # which ends waiting long-polls (Dispatcher's on_drain)
        await self._set_health(False)
        if self.server is not None:
            await self.server.stop(self.settings.shutdown_grace_s if grace is None else grace)
        await stop_tasks(self._tasks, self.tasks_stop_within_s)
        await c.finish_writes()

    async def close(self) -> None:
        c = self.components
        await c.runs.dispose()
        await c.index.client.aclose()

    def mark_phase(self, phase: Phase) -> None:
        self.components.state.phase = phase
