"""Update notices that need not hold up a reply.

A notice only tells StreamUpdates subscribers to look again (the events come
from SQL, and subscribers re-read every second anyway), so a Lease need not
wait for its publish before answering the worker: `LateNotices` publishes
after the reply, and notices that gather while one publish is in flight go
out together in the next (`Gatherer`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from dispatcher.domain.errors import Unavailable
from dispatcher.service.gather import Gatherer
from dispatcher.store.redis.index import Notice

logger = logging.getLogger(__name__)


class LateNotices:
    """Publishes notices in the background, one publish per gathered batch."""

    def __init__(self, publish: Callable[[Sequence[Notice]], Awaitable[None]]) -> None:
        self._publish = publish
        self._gathered = Gatherer(self._publish_batch)

    def send(self, notices: Sequence[Notice]) -> None:
        self._gathered.add(notices)

    async def flush(self) -> None:
        """Return once everything sent so far is published (or given up)."""
        await self._gathered.caught_up()

    async def _publish_batch(self, batch: list[Notice]) -> None:
        try:
            await self._publish(batch)
        except Unavailable:  # subscribers re-read within a second regardless
            logger.warning("could not publish %d update notices", len(batch))
