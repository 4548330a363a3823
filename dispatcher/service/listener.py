"""One Redis subscription per replica: wake-ups for Lease, notices for StreamUpdates."""

from __future__ import annotations

import asyncio
import logging

from dispatcher.domain.errors import Unavailable
from dispatcher.service.state import ServingState
from dispatcher.service.updates import UpdateHub
from dispatcher.service.wakeups import Waiters
from dispatcher.store.redis.index import RedisIndex
from dispatcher.store.redis.keys import Keys

logger = logging.getLogger(__name__)


async def listen_forever(
    index: RedisIndex, waiters: Waiters, hub: UpdateHub, state: ServingState
) -> None:
    """Dispatch pub/sub messages until draining; resubscribe after a Redis failure."""
    wake, updates = index.keys.wake_channel(), index.keys.updates_channel()
    own = index.origin
    backoff = 0.1
    while not state.draining.is_set():
        try:
            async for channel, message in index.listen([wake, updates]):
                backoff = 0.1
                if channel == wake:
                    queue, origin, count = Keys.split_wake(message)
                    if origin != own:  # our own enqueue woke our waiters already
                        waiters.notify(queue, count)
                elif channel == updates:
                    hub.on_message(message)
        except Unavailable:
            logger.warning("lost the Redis subscription; resubscribing")
            # Whatever was published meanwhile is lost: let every waiter look again.
            waiters.notify_all()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
