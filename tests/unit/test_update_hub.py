"""UpdateHub's waits stop when cancelled, whenever the cancel lands."""

from __future__ import annotations

import asyncio

from dispatcher.service.updates import Subscription, UpdateHub


async def test_a_loop_waiting_for_changes_stops_when_cancelled_as_a_change_arrives() -> None:
    hub = UpdateHub()

    async def waiting_forever() -> None:
        while True:
            await hub.wait_for_change(1.0)

    lost = 0
    for _ in range(20):
        task = asyncio.create_task(waiting_forever())
        await asyncio.sleep(0.001)  # it waits
        sub = Subscription("default", frozenset(["job"]), "")
        await hub.subscribe(sub)  # the first follower: a change (no listener: no wait)...
        task.cancel()  # ...and a cancel, in the same turn of the loop
        done, _ = await asyncio.wait([task], timeout=2.0)
        if task not in done:
            lost += 1
            task.cancel()  # again, to end it: the first was swallowed
            await asyncio.wait([task], timeout=2.0)
        hub.unsubscribe(sub)
    assert lost == 0
