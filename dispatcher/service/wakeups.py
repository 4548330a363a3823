"""Wake-ups for long-polling Lease calls.

Every waiting Lease registers an event under each queue it polls. A queue
gaining ready jobs sets those events: directly when this replica enqueued,
and through the Redis wake channel (published by the enqueue and place
scripts) when another replica did.

An enqueue of n jobs wakes n waiters, not all of them: with many idle workers,
waking all made every one of them run a lease script for each job, and all
but one found nothing. A woken waiter owes a look; one that leaves before it
looks again (it returned, failed or was cancelled) passes the wake-up on.
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
        # Per queue, the events in the order their waiters arrived (a dict keeps it).
        self._by_queue: dict[QueueRef, dict[asyncio.Event, None]] = defaultdict(dict)

    @contextmanager
    def waiting(self, queues: Sequence[QueueRef]) -> Iterator[asyncio.Event]:
        """Register one event under every queue for the duration of the block.

        The holder clears the event before each look. If it is set when the block
        ends, a wake-up came that no look followed: another waiter gets it.
        """
        event = asyncio.Event()
        for q in queues:
            self._by_queue[q][event] = None
        try:
            yield event
        finally:
            for q in queues:
                waiting = self._by_queue.get(q)
                if waiting is not None:
                    waiting.pop(event, None)
                    if not waiting:
                        del self._by_queue[q]
            if event.is_set():
                for q in queues:
                    self.notify(q, 1)

    def notify(self, queue: QueueRef, count: int | None = None) -> None:
        """Wake every waiter of a queue, or `count` that are not woken yet, the
        longest waiting first (each woken waiter looks at least once more)."""
        waiting = self._by_queue.get(queue, {})
        if count is None:
            for event in waiting:
                event.set()
            return
        for event in waiting:
            if count <= 0:
                return
            if not event.is_set():
                event.set()
                count -= 1

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
