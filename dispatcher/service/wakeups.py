"""Wake-ups for long-polling Lease calls.

Every waiting Lease registers an event under each queue it polls. A queue
gaining ready jobs sets those events: directly when this replica enqueued,
and through the Redis wake channel (published by the enqueue and place
scripts) when another replica did.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

QueueRef = tuple[str, str]


class Waiters:
    """Events of waiting Lease calls, by queue."""

    def __init__(self) -> None:
        self._by_queue: dict[QueueRef, set[asyncio.Event]] = defaultdict(set)

    @contextmanager
    def waiting(self, queues: Sequence[QueueRef]) -> Iterator[asyncio.Event]:
        """Register one event under every queue for the duration of the block."""
        event = asyncio.Event()
        for q in queues:
            self._by_queue[q].add(event)
        try:
            yield event
        finally:
            for q in queues:
                waiting = self._by_queue.get(q)
                if waiting is not None:
                    waiting.discard(event)
                    if not waiting:
                        del self._by_queue[q]

    def notify(self, queue: QueueRef) -> None:
        for event in self._by_queue.get(queue, ()):
            event.set()

    def notify_all(self) -> None:
        for events in self._by_queue.values():
            for event in events:
                event.set()

    def count(self) -> int:
        return len({e for events in self._by_queue.values() for e in events})

    def count_in(self, namespace: str) -> int:
        return len(
            {e for (ns, _), events in self._by_queue.items() if ns == namespace for e in events}
        )
