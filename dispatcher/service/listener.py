"""One Redis subscription per replica: wake-ups for Lease, notices for StreamUpdates.

The wake channel is always taken. The updates channel is taken only while a
stream on this replica follows something (`UpdateHub.followed`), and kept for
`LINGER_S` after the last one ends, so that a producer opening a stream per
job does not subscribe and unsubscribe for each. Without a follower, a notice
would be read, decoded and dropped: work that grows with the whole
deployment's traffic, on every replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from dispatcher.domain.errors import Unavailable
from dispatcher.service.state import ServingState
from dispatcher.service.updates import UpdateHub
from dispatcher.service.wakeups import Waiters
from dispatcher.store.redis.index import PubSubMessage, RedisIndex, Subscriber
from dispatcher.store.redis.keys import Keys

logger = logging.getLogger(__name__)

LINGER_S = 30.0
READ_TIMEOUT_S = 1.0  # how often the reader looks up from an idle connection


async def listen_forever(
    index: RedisIndex,
    waiters: Waiters,
    hub: UpdateHub,
    state: ServingState,
    linger_s: float = LINGER_S,
) -> None:
    """Dispatch pub/sub messages until draining; resubscribe after a Redis failure."""
    channels = _Channels(index.keys.wake_channel(), index.keys.updates_channel(), index.origin)
    backoff = 0.1
    while not state.draining.is_set():
        sub = index.subscriber()
        demand: asyncio.Task[None] | None = None
        try:
            await sub.subscribe(channels.wake)
            hub.attach()
            demand = asyncio.create_task(
                _updates_while_followed(sub, hub, channels.updates, linger_s)
            )
            while True:
                message = await sub.next(READ_TIMEOUT_S)
                backoff = 0.1
                if demand.done():
                    demand.result()  # its failure (Unavailable) is this connection's
                if message is not None:
                    _dispatch(message, channels, waiters, hub)
        except Unavailable:
            logger.warning("lost the Redis subscription; resubscribing")
            # Whatever was published meanwhile is lost: let every waiter look again.
            waiters.notify_all()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
        finally:
            hub.detach()
            if demand is not None:
                demand.cancel()
                with contextlib.suppress(asyncio.CancelledError, Unavailable):
                    await demand
            await sub.close()


@dataclass(frozen=True)
class _Channels:
    wake: str
    updates: str
    origin: str  # this replica's name in its own enqueues' wake-ups


def _dispatch(
    message: PubSubMessage, channels: _Channels, waiters: Waiters, hub: UpdateHub
) -> None:
    updates = message.channel == channels.updates
    if message.kind == "message":
        if updates:
            hub.on_message(message.data)
        elif message.channel == channels.wake:
            queue, origin, count = Keys.split_wake(message.data)
            if origin != channels.origin:  # our own enqueue woke our waiters already
                waiters.notify(queue, count)
    elif updates and message.kind in ("subscribe", "unsubscribe"):
        hub.confirmed(subscribed=message.kind == "subscribe")


async def _updates_while_followed(
    sub: Subscriber, hub: UpdateHub, channel: str, linger_s: float
) -> None:
    """Take the updates `channel` while this replica has followers; drop it once
    none has come for `linger_s`. Redis's confirmations (read by the reader)
    tell `UpdateHub.subscribe` when the subscription is live."""
    subscribed = False
    while True:
        if hub.followed and not subscribed:
            hub.asking(subscribe=True)
            await sub.subscribe(channel)
            subscribed = True
        elif not hub.followed and subscribed:
            await hub.wait_for_change(linger_s)  # a new follower within it keeps it
            if hub.followed:
                continue
            hub.asking(subscribe=False)
            await sub.unsubscribe(channel)
            subscribed = False
        await hub.wait_for_change()
