"""Wake-ups of waiting Lease calls: n new jobs wake n waiters, and none is lost."""

from __future__ import annotations

import asyncio
from contextlib import ExitStack

from dispatcher.service.wakeups import Waiters
from dispatcher.store.redis.keys import Keys

Q = ("default", "q")
OTHER = ("default", "other")


async def test_a_count_wakes_that_many_waiters_the_longest_waiting_first() -> None:
    waiters = Waiters()
    with ExitStack() as stack:
        events = [stack.enter_context(waiters.waiting([Q])) for _ in range(4)]
        waiters.notify(Q, 2)
        assert [e.is_set() for e in events] == [True, True, False, False]


async def test_a_count_skips_waiters_already_woken() -> None:
    waiters = Waiters()
    with ExitStack() as stack:
        events = [stack.enter_context(waiters.waiting([Q])) for _ in range(3)]
        waiters.notify(Q, 1)
        waiters.notify(Q, 1)
        assert [e.is_set() for e in events] == [True, True, False]


async def test_no_count_wakes_every_waiter_of_the_queue_only() -> None:
    waiters = Waiters()
    with ExitStack() as stack:
        on_q = [stack.enter_context(waiters.waiting([Q])) for _ in range(3)]
        on_other = stack.enter_context(waiters.waiting([OTHER]))
        waiters.notify(Q)
        assert all(e.is_set() for e in on_q)
        assert not on_other.is_set()


async def test_a_waiter_that_leaves_woken_passes_the_wake_up_on() -> None:
    waiters = Waiters()
    leaving_block = waiters.waiting([OTHER, Q])
    leaving = leaving_block.__enter__()  # the longest waiting
    with waiters.waiting([Q]) as staying, waiters.waiting([OTHER]) as elsewhere:
        waiters.notify(Q, 1)
        assert (leaving.is_set(), staying.is_set()) == (True, False)
        leaving_block.__exit__(None, None, None)
        # It ended without looking again: a waiter of the queue it was woken for
        # owes the look now, and nobody is woken for its other queue.
        assert (staying.take(), elsewhere.is_set()) == ([Q], False)
    assert waiters.count() == 0


async def test_more_jobs_than_unwoken_waiters_send_the_woken_ones_to_that_queue_too() -> None:
    waiters = Waiters()
    with waiters.waiting([OTHER, Q]) as only:
        waiters.notify(OTHER, 1)
        waiters.notify(Q, 1)  # no unwoken waiter is left for it
        assert only.take() == [OTHER, Q]


async def test_a_waiter_takes_the_queues_woken_since_its_last_look_once() -> None:
    waiters = Waiters()
    with waiters.waiting([Q, OTHER]) as waiter:
        waiters.notify(OTHER)
        assert (waiter.is_set(), waiter.take()) == (True, [OTHER])
        assert (waiter.is_set(), waiter.take()) == (False, [])
        waiters.notify_all()
        assert waiter.take() == [Q, OTHER]


async def test_a_waiter_that_leaves_unwoken_wakes_nobody() -> None:
    waiters = Waiters()
    with waiters.waiting([Q]) as staying:
        with waiters.waiting([Q]):
            pass
        assert not staying.is_set()


async def test_a_waiter_failing_woken_passes_the_wake_up_on() -> None:
    waiters = Waiters()
    failing_block = waiters.waiting([Q])
    failing = failing_block.__enter__()  # the longest waiting
    with waiters.waiting([Q]) as staying:
        waiters.notify(Q, 1)
        assert (failing.is_set(), staying.is_set()) == (True, False)
        error = asyncio.CancelledError()
        swallowed = failing_block.__exit__(type(error), error, None)
        assert (swallowed, staying.take()) == (False, [Q])


def test_an_enqueue_wake_up_names_its_queue_replica_and_count() -> None:
    message = Keys.wake_prefix("ns", "q.1", "ab12") + "7"  # enqueue.lua appends the count
    assert Keys.split_wake(message) == (("ns", "q.1"), "ab12", 7)


def test_a_bare_wake_up_names_only_its_queue_and_wakes_everyone() -> None:
    assert Keys.split_wake(Keys.queue_ref("ns", "q")) == (("ns", "q"), "", None)
