"""Update notices that need not hold up a reply.

A notice only tells StreamUpdates subscribers to look again (the events come
from SQL, and subscribers re-read every second anyway), so a Lease need not
wait for its publish before answering the worker: `LateNotices` publishes
after the reply, and notices that gather while one publish is in flight go
out together in the next.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from dispatcher.domain.errors import Unavailable
from dispatcher.store.redis.index import Notice

logger = logging.getLogger(__name__)


class LateNotices:
    """Publishes notices in the background, one publish per gathered batch."""

    def __init__(self, publish: Callable[[Sequence[Notice]], Awaitable[None]]) -> None:
        self._publish = publish
        self._pending: list[Notice] = []
        self._sender: asyncio.Task[None] | None = None

    def send(self, notices: Sequence[Notice]) -> None:
        if not notices:
            return
        self._pending += notices
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_pending())

    async def flush(self) -> None:
        """Return once everything sent so far is published (or given up)."""
        while self._sender is not None:
            await asyncio.shield(self._sender)

    async def _send_pending(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    await self._publish(batch)
                except Unavailable:  # subscribers re-read within a second regardless
                    logger.warning("could not publish %d update notices", len(batch))
        finally:
            self._sender = None
