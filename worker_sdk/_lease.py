"""Leases held by a worker, and the loop that keeps them alive with coalesced heartbeats.

One Heartbeat call renews every lease in flight, well before the first one
would expire. A lease the dispatcher no longer recognises (lost) or whose job
was cancelled has its handler cancelled; a lease that could not be renewed
before its expiry (dispatcher unreachable) is treated as lost too, since the
dispatcher will hand the job to someone else.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import grpc

from worker_sdk import _retry
from worker_sdk._convert import duration
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2 as pb
from worker_sdk._proto.dispatch.v1 import job_pb2 as jpb
from worker_sdk.client import Client
from worker_sdk.context import JobContext
from worker_sdk.errors import DispatcherError, from_rpc_error
from worker_sdk.options import WorkerOptions

logger = logging.getLogger(__name__)
IDLE_TICK_S = 5.0  # how often the loop looks again when it holds no lease


class LeaseState(enum.Enum):
    RUNNING = "running"  # the handler runs
    FINISHING = "finishing"  # the handler is done; its Ack or Nack is on its way
    LOST = "lost"  # no longer ours: nothing will be sent for it
    CANCEL_REQUESTED = "cancel_requested"  # the job was cancelled: handler cancelled, Nack
    RELEASING = "releasing"  # the worker is stopping: handler cancelled, given back


@dataclass(eq=False)
class Held:
    """One lease this worker holds."""

    token: str
    context: JobContext
    duration_s: float
    expires_at: float  # time.monotonic() by which it must be renewed
    renewed_at: float
    registry: dict[str, Held]  # the worker's leases, which this one leaves once settled
    state: LeaseState = LeaseState.RUNNING
    task: asyncio.Task[None] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)  # settled or given up
    # Its Ack or Nack call is in flight: that call's reply settles it, so it is
    # not renewed meanwhile (an outcome that lands first ends the lease, and the
    # renewal would be refused as if the lease had been lost).
    sending: bool = False
    # Its handler has a slot (leased ahead, a job waits for one first).
    started: bool = False

    @property
    def renewable(self) -> bool:
        return self.state is not LeaseState.LOST and not self.sending

    def due_at(self, fraction: float) -> float:
        return self.renewed_at + self.duration_s * fraction

    def end(self, state: LeaseState) -> None:
        """Stop the handler (its result will not be used for LOST)."""
        if self.state is LeaseState.RUNNING:
            self.state = state
            self.context._cancel()
            if self.task is not None:
                self.task.cancel()
        elif state is LeaseState.LOST:
            self.state = state

    def settle(self) -> None:
        """Nothing more will be sent for this lease: forget it."""
        self.done.set()
        self.registry.pop(self.token, None)

    def lose(self, why: str) -> None:
        """The lease is no longer ours: stop the handler, send nothing, forget it."""
        if self.state is not LeaseState.LOST:
            logger.warning("lease of job %s lost (%s): its result will not be sent",
                           self.context.id, why)  # fmt: skip
        self.end(LeaseState.LOST)
        self.settle()


def new_held(
    lease: pb.Lease, context: JobContext, o: WorkerOptions, registry: dict[str, Held]
) -> Held:
    now_wall, now = time.time(), time.monotonic()
    if o.lease_duration is not None:
        seconds = o.lease_duration.total_seconds()
    elif lease.job.HasField("lease_duration"):
        seconds = lease.job.lease_duration.ToTimedelta().total_seconds()
    else:
        seconds = lease.expire_time.ToDatetime().timestamp() - now_wall
    seconds = max(seconds, 1.0)
    return Held(lease.lease_token, context, seconds, now + seconds, now, registry)


class Heartbeats:
    """Renews every lease in `held` in one call, in time; cancels handlers of lost leases."""

    def __init__(self, client: Client, held: dict[str, Held], options: WorkerOptions) -> None:
        self.client = client
        self.held = held
        self.options = options
        self.changed = asyncio.Event()  # a lease is due before the loop planned to wake
        self._wake_at = math.inf  # when the loop plans to renew next (time.monotonic())
        self._backoff = _retry.Backoff(client.options.retry)

    def added(self, held: Held) -> None:
        """A new lease: wake the loop only if it must be renewed before the loop
        planned to wake. Leases of one batch, or longer than one already held,
        are renewed with the rest; waking for each cost a worker about 2% of
        its samples in a drain, looking through every lease it held."""
        if held.due_at(self.options.heartbeat_every) < self._wake_at:
            self.changed.set()

    async def run(self) -> None:
        while True:
            await self._sleep_until_due()
            leases = [h for h in self.held.values() if h.renewable]
            if not leases:
                continue
            try:
                await self._renew(leases)
                self._backoff.reset()
            except DispatcherError as exc:
                delay = self._backoff.next_delay_s()
                logger.warning("heartbeat failed (%s); again in %.2fs", exc, delay)
                self._give_up_expired(leases)
                await asyncio.sleep(delay)

    async def _sleep_until_due(self) -> None:
        fraction = self.options.heartbeat_every
        while True:
            live = [h for h in self.held.values() if h.renewable]
            due = min((h.due_at(fraction) for h in live), default=time.monotonic() + IDLE_TICK_S)
            self._wake_at = due
            self.changed.clear()
            timeout = due - time.monotonic()
            if timeout <= 0:
                return
            try:
                # Not wait_for: see the house rule in tests/unit/test_codebase_rules.py.
                async with asyncio.timeout(timeout):
                    await self.changed.wait()
            except TimeoutError:
                return
            # A lease was added that is due sooner: look again.

    async def _renew(self, leases: list[Held]) -> None:
        items = []
        for h in leases:
            item = pb.HeartbeatItem(lease_token=h.token)
            progress = h.context._take_progress()
            if progress is not None:
                item.progress.CopyFrom(
                    jpb.Progress(percent=progress.percent, message=progress.message)
                )
            if self.options.lease_duration is not None:
                item.lease_duration.CopyFrom(duration(self.options.lease_duration))
            items.append(item)
        sent_at = time.monotonic()
        request = pb.HeartbeatRequest(namespace=self.client.namespace, items=items)
        try:
            reply = await self.client.raw.Heartbeat(
                request, timeout=self.client.options.timeout.total_seconds()
            )
        except grpc.aio.AioRpcError as exc:
            err = from_rpc_error(exc)
            if len(leases) == 1 and err.code in (
                grpc.StatusCode.FAILED_PRECONDITION,
                grpc.StatusCode.NOT_FOUND,
            ):  # a one-item call fails as a whole with the item's error
                _refused(leases[0], err.reason or err.code.name)
                return
            raise err from None
        for h, result in zip(leases, reply.results, strict=True):
            if result.HasField("error"):
                _refused(h, result.error.reason or str(result.error.code))
            elif result.cancel_requested:
                logger.info("job %s was cancelled: stopping its handler", h.context.id)
                h.end(LeaseState.CANCEL_REQUESTED)
                h.renewed_at, h.expires_at = sent_at, sent_at + h.duration_s
            else:
                h.renewed_at, h.expires_at = sent_at, sent_at + h.duration_s

    def _give_up_expired(self, leases: Iterable[Held]) -> None:
        now = time.monotonic()
        for h in leases:
            if h.expires_at <= now and h.state is not LeaseState.LOST:
                h.lose("could not be renewed before it expired")


def _refused(h: Held, why: str) -> None:
    """A renewal was refused: the lease is lost, unless its outcome went out
    while the renewal was on its way (the outcome's reply settles it then)."""
    if h.sending or h.done.is_set():
        return
    h.lose(why)
