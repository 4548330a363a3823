"""Sending handler outcomes: Acks and Nacks coalesced into batch calls, retried until sent.

One Ack call and one Nack call at a time; outcomes that arrive meanwhile go
in the next ones. Completion is fenced by the lease token on the server, so
resending after an unclear failure is safe. An outcome whose lease expired
before it could be sent is dropped: the dispatcher will deliver the job
again, and our late call would be refused anyway.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import grpc

from worker_sdk import _retry
from worker_sdk._convert import duration
from worker_sdk._lease import Held, LeaseState
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2 as pb
from worker_sdk.client import Client
from worker_sdk.errors import DispatcherError, from_rpc_error

logger = logging.getLogger(__name__)
MAX_ITEMS = 500  # per call


@dataclass(frozen=True)
class Ack:
    result: bytes
    content_type: str


@dataclass(frozen=True)
class Nack:
    error: str
    retry: bool = True
    retry_after: timedelta | None = None
    release: bool = False


Outcome = Ack | Nack


class Completions:
    """Queue of (lease, outcome) sent in batches by `run()`; `flush()` waits until all are."""

    def __init__(self, client: Client, requeued: Callable[[Held], None]) -> None:
        self.client = client
        self.requeued = requeued  # a failed call's lease must be renewed again
        self.pending: list[tuple[Held, Outcome]] = []
        self.arrived = asyncio.Event()
        self._backoff = _retry.Backoff(client.options.retry)

    def put(self, held: Held, outcome: Outcome) -> None:
        held.state = LeaseState.FINISHING if held.state is LeaseState.RUNNING else held.state
        held.sending = False
        self.pending.append((held, outcome))
        self.arrived.set()

    async def run(self) -> None:
        while True:
            await self.arrived.wait()
            self.arrived.clear()
            while self.pending:
                batch, self.pending = self.pending[:MAX_ITEMS], self.pending[MAX_ITEMS:]
                batch = [(h, o) for h, o in batch if self._still_ours(h)]
                try:
                    await self._send(batch)
                    self._backoff.reset()
                except DispatcherError as exc:
                    delay = self._backoff.next_delay_s()
                    logger.warning("completing jobs failed (%s); again in %.2fs", exc, delay)
                    await asyncio.sleep(delay)  # the failed call put its items back

    def _still_ours(self, h: Held) -> bool:
        if h.state is LeaseState.LOST or h.expires_at <= time.monotonic():
            h.lose("it expired before the outcome was sent")
            return False
        return True

    async def _send(self, batch: list[tuple[Held, Outcome]]) -> None:
        acks = [(h, o) for h, o in batch if isinstance(o, Ack)]
        nacks = [(h, o) for h, o in batch if isinstance(o, Nack)]
        calls = []
        if acks:
            items = [
                pb.AckItem(lease_token=h.token, result=o.result, result_content_type=o.content_type)
                for h, o in acks
            ]
            calls.append(self._call("Ack", pb.AckRequest(items=items), acks))
        if nacks:
            calls.append(
                self._call(
                    "Nack", pb.NackRequest(items=[_nack_item(h, o) for h, o in nacks]), nacks
                )
            )
        results = await asyncio.gather(*calls, return_exceptions=True)
        for r in results:  # the other call's items are settled; resend only the failed ones
            if isinstance(r, BaseException):
                raise r

    async def _call(
        self,
        method: str,
        request: pb.AckRequest | pb.NackRequest,
        batch: Sequence[tuple[Held, Outcome]],
    ) -> None:
        request.namespace = self.client.namespace
        timeout = self.client.options.timeout.total_seconds()
        for h, _ in batch:
            h.sending = True
        try:
            reply = await getattr(self.client.raw, method)(request, timeout=timeout)
            errors = [
                (r.error.reason or str(r.error.code)) if r.HasField("error") else ""
                for r in reply.results
            ]
        except grpc.aio.AioRpcError as exc:
            err = from_rpc_error(exc)
            if (
                len(batch) != 1
                or err.code in self.client.options.retry.codes
                or err.code
                in (
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    grpc.StatusCode.UNKNOWN,
                    grpc.StatusCode.INTERNAL,
                )
            ):
                self.pending = [*batch, *self.pending]
                for h, _ in batch:
                    h.sending = False
                    self.requeued(h)
                raise err from None
            errors = [err.reason or err.code.name]  # a one-item call fails with its item's error
        for (h, o), error in zip(batch, errors, strict=True):
            if error == "JOB_CANCELLED" and isinstance(o, Ack):
                # Cancelled while it ran: its Ack is refused; a Nack ends it CANCELLED now.
                self.put(h, Nack("cancelled while running", retry=False))
                continue
            if error:
                logger.warning("job %s: %s refused (%s)", h.context.id, method, error)
            h.settle()


def _nack_item(h: Held, o: Nack) -> pb.NackItem:
    item = pb.NackItem(lease_token=h.token, error=o.error, retry=o.retry, release=o.release)
    if o.retry_after is not None:
        item.retry_after.CopyFrom(duration(o.retry_after))
    return item
