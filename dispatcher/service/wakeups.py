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

A waiter that is idle (blocked, not looking) can instead be handed a job
outright: `claim` takes the longest-waiting idle one of a queue, and the
enqueue that claimed it either `hand`s it a lease or `release`s it.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from dispatcher.domain.auth import Principal
from dispatcher.domain.models import GrantedLease

QueueRef = tuple[str, str]


@dataclass(frozen=True)
class Asker:
    """Who waits and on what terms: what a lease handed to the waiter is made with."""

    worker_id: str
    duration_ms: int | None  # None: each job's own
    principal: Principal | None  # the caller's credential (None: the server runs open)

    @property
    def principal_id(self) -> str:
        return "" if self.principal is None else self.principal.key_id


class Waiter:
    """One waiting Lease: woken, and for which of its queues; or handed a lease."""

    def __init__(self, asker: Asker | None = None) -> None:
        self._event = asyncio.Event()
        self._woken: dict[QueueRef, None] = {}  # in the order the wake-ups came
        self.asker = asker  # None: not to be handed jobs
        self.idle = False  # blocked in its wait, not looking at its queues
        self.claimed = False  # an enqueue is making a lease for it
        self.gone = False  # the Lease call has returned or failed
        self._handed: list[GrantedLease] = []
        self._skipped: dict[QueueRef, None] = {}  # wake-ups that came while claimed

    def hand(self, lease: GrantedLease) -> bool:
        """Give the claimed waiter its lease; False if it has gone (the caller gives it back)."""
        self.claimed = False
        for queue in self._skipped:  # passed on to another waiter when this one leaves
            self._woken[queue] = None
        self._skipped = {}
        if self.gone:
            return False
        self._handed.append(lease)
        self._event.set()
        return True

    def release(self) -> None:
        """The claim came to nothing: the waiter waits on, woken now for what
        it missed while claimed."""
        self.claimed = False
        skipped, self._skipped = self._skipped, {}
        for queue in skipped:
            self.wake(queue)

    def skip(self, queue: QueueRef) -> None:
        """A wake-up for a claimed waiter, kept until its claim ends."""
        self._skipped[queue] = None

    def untaken(self) -> list[QueueRef]:
        """Wake-ups it will not act on (it is leaving): woken and skipped alike."""
        skipped, self._skipped = list(self._skipped), {}
        return list(dict.fromkeys([*self.take(), *skipped]))

    def take_handed(self) -> list[GrantedLease]:
        handed, self._handed = self._handed, []
        return handed

    def wake(self, queue: QueueRef) -> None:
        self._woken[queue] = None
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self, seconds: float) -> None:
        """Until woken or handed a lease, or for `seconds`.

        The Lease's own task waits on the event: a lease handed to it wakes it
        in the event loop's next pass, ahead of the Enqueue that handed it,
        whose answer is set after. Waiting through `asyncio.wait` on helper
        tasks (one for this, one for draining) took two passes more and two
        tasks per wait, and the producer's answer went out before the
        worker's. Draining wakes every waiter instead (`ServingState.on_drain`).
        """
        with suppress(TimeoutError):
            async with asyncio.timeout(seconds):
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
    def waiting(self, queues: Sequence[QueueRef], asker: Asker | None = None) -> Iterator[Waiter]:
        """Register one waiter under every queue for the duration of the block.

        The holder takes its wake-ups before each look. A wake-up still untaken
        when the block ends came after the last look: another waiter gets it.
        """
        waiter = Waiter(asker)
        for q in queues:
            self._by_queue[q][waiter] = None
        try:
            yield waiter
        finally:
            waiter.gone = True
            for q in queues:
                waiting = self._by_queue.get(q)
                if waiting is not None:
                    waiting.pop(waiter, None)
                    if not waiting:
                        del self._by_queue[q]
            for q in waiter.untaken():
                self.notify(q, 1)

    def notify(self, queue: QueueRef, count: int | None = None) -> None:
        """Wake every waiter of a queue, or `count` that are not woken yet, the
        longest waiting first (each woken waiter looks at least once more)."""
        # A claimed waiter is about to be handed a job: it is not woken now (it
        # would look, take jobs of its own and have to give the handed one back),
        # but when its claim ends.
        waiting = []
        for w in self._by_queue.get(queue, {}):
            if w.claimed:
                w.skip(queue)
            else:
                waiting.append(w)
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

    def waiting_on(self, queue: QueueRef) -> bool:
        return queue in self._by_queue

    def claim(self, queue: QueueRef) -> Waiter | None:
        """The longest-waiting idle waiter of a queue that takes handed jobs,
        now claimed (no other enqueue claims it), or None."""
        for waiter in self._by_queue.get(queue, {}):
            if waiter.asker is not None and waiter.idle and not (waiter.claimed or waiter.is_set()):
                waiter.claimed = True
                return waiter
        return None

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
