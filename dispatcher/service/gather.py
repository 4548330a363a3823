"""Writes made after the reply, gathered while one is in flight.

Some writes need not hold up a call's answer: the update notices of a Lease,
the index write that follows Enqueue's commit. A `Gatherer` makes them in the
background, one write in flight at a time; what is added meanwhile goes out
together in the next, so a busy server makes fewer, larger writes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class Gatherer(Generic[T]):
    """Runs `write` in the background on the items added, in gathered batches.

    `write` handles its own failures: a batch it fails is not written again."""

    def __init__(self, write: Callable[[list[T]], Awaitable[None]]) -> None:
        self._write = write
        self._pending: list[T] = []  # added, not yet taken by a write
        # Resolved once the pending items are written; then, while they are
        # written, the future of the write in flight.
        self._queued: asyncio.Future[None] | None = None
        self._in_flight: asyncio.Future[None] | None = None
        self._sender: asyncio.Task[None] | None = None

    def add(self, items: Iterable[T]) -> None:
        self._pending.extend(items)
        if not self._pending:
            return
        if self._queued is None:
            self._queued = asyncio.get_running_loop().create_future()
        if self._sender is None:
            self._sender = asyncio.create_task(self._send())

    async def caught_up(self) -> None:
        """Return once everything added so far is written (or given up)."""
        latest = self._queued or self._in_flight
        if latest is not None:
            await asyncio.shield(latest)

    async def _send(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                done, self._queued = self._queued, None
                self._in_flight = done
                try:
                    await self._write(batch)
                finally:
                    self._in_flight = None
                    if done is not None and not done.done():
                        done.set_result(None)
        finally:
            self._sender = None
