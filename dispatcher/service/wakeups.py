"""Wake-ups for long-polling Lease calls.

Every waiting Lease registers one `Waiter` under each queue it polls. A queue
gaining ready jobs wakes them: directly when this replica enqueued, and
through the Redis wake channel (published by the enqueue and place scripts)
when another replica did.

An enqueue of n jobs wakes n waiters, not all of them: with many idle workers,
waking all made every one of them run a lease script for each job, and all
but one found nothing. A woken waiter owes a look at the queues it was woken
for; one that leaves before it looks again (it returned, failed or was
cancelled) passes the wake-up on.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

QueueRef = tuple[str, str]


class Waiter:
    """One waiting Lease: woken, and for which of its queues."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._woken: dict[QueueRef, None] = {}  # in the order the wake-ups came

    def wake(self, queue: QueueRef) -> None:
        self._woken[queue] = None
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()

    def take(self) -> list[QueueRef]:
        """The queues woken since the last take, and clear: the holder looks now."""
        woken, self._woken = list(self._woken), {}
        self._event.clear()
        return woken


class Waiters:
    """Waiting Lease calls, by queue."""

    def __init__(self) -> None:
        # Per queue, the waiters in the order they arrived (a dict keeps it).
        self._by_queue: dict[QueueRef, dict[Waiter, None]] = defaultdict(dict)

    @contextmanager
    def waiting(self, queues: Sequence[QueueRef]) -> Iterator[Waiter]:
        """Register one waiter under every queue for the duration of the block.

        The holder takes its wake-ups before each look. A wake-up still untaken
        when the block ends came after the last look: another waiter gets it.
        """
        waiter = Waiter()
        for q in queues:
            self._by_queue[q][waiter] = None
        try:
            yield waiter
        finally:
            for q in queues:
                waiting = self._by_queue.get(q)
                if waiting is not None:
                    waiting.pop(waiter, None)
                    if not waiting:
                        del self._by_queue[q]
            for q in waiter.take():
                self.notify(q, 1)

    def notify(self, queue: QueueRef, count: int | None = None) -> None:
        """Wake every waiter of a queue, or `count` that are not woken yet, the
        longest waiting first (each woken waiter looks at least once more)."""
        waiting = self._by_queue.get(queue, {})
        if count is None:
            for waiter in waiting:
                waiter.wake(queue)
            return
        for waiter in waiting:
            if count <= 0:
                return
            if not waiter.is_set():
                waiter.wake(queue)
                count -= 1
        # More jobs than unwoken waiters: the woken ones look at this queue too.
        for waiter in waiting:
            waiter.wake(queue)

    def notify_all(self) -> None:
        for queue, waiting in self._by_queue.items():
            for waiter in waiting:
                waiter.wake(queue)

    def count(self) -> int:
        return len({w for waiting in self._by_queue.values() for w in waiting})

    def count_in(self, namespace: str) -> int:
        return len(
            {w for (ns, _), waiting in self._by_queue.items() if ns == namespace for w in waiting}
        )
