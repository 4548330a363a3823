"""Stopping a replica cancels its background loops and waits for them, but a loop
that lost its cancellation must not hang the shutdown: it is logged and left."""

from __future__ import annotations

import asyncio
import logging

import pytest

from dispatcher.app import stop_tasks


async def test_stopping_cancels_the_loops_and_returns_once_they_end() -> None:
    loop_a = asyncio.create_task(asyncio.sleep(3600), name="a")
    loop_b = asyncio.create_task(asyncio.sleep(3600), name="b")

    await stop_tasks([loop_a, loop_b], within_s=30)

    assert loop_a.cancelled() and loop_b.cancelled()


async def test_a_loop_that_swallows_its_cancellation_is_logged_and_left_behind(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                continue  # what a client library that swallows a cancel amounts to

    task = asyncio.create_task(stubborn(), name="stubborn-listener")
    polite = asyncio.create_task(asyncio.sleep(3600), name="polite")
    await asyncio.sleep(0)  # both start, so the cancel lands inside `stubborn`

    with caplog.at_level(logging.WARNING, logger="dispatcher.app"):
        await stop_tasks([task, polite], within_s=0.2)

    assert polite.cancelled()
    assert not task.done()
    assert "stubborn-listener did not stop" in caplog.text
    assert "stubborn" in caplog.text.split("(at ")[1]
    release.set()
    await task
