"""LateNotices: update notices published after the reply, gathered while one is in flight."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from dispatcher.domain.errors import Unavailable
from dispatcher.service.late_notices import LateNotices
from dispatcher.store.redis.index import Notice


def notice(n: int) -> Notice:
    return (f"job-{n}", "default", "q", n)


class Publisher:
    """Records each publish; holds the first one until released."""

    def __init__(self, fail_first: bool = False) -> None:
        self.published: list[list[Notice]] = []
        self.release = asyncio.Event()
        self.fail_first = fail_first

    async def __call__(self, notices: Sequence[Notice]) -> None:
        if not self.published and not self.release.is_set():
            await self.release.wait()
        self.published.append(list(notices))
        if self.fail_first and len(self.published) == 1:
            raise Unavailable("redis is away")


async def test_notices_sent_while_a_publish_is_in_flight_go_out_together_in_the_next() -> None:
    publish = Publisher()
    late = LateNotices(publish)

    late.send([notice(1)])
    await asyncio.sleep(0)  # the first publish starts and waits
    late.send([notice(2)])
    late.send([notice(3), notice(4)])
    late.send([])
    publish.release.set()
    await late.flush()

    assert publish.published == [[notice(1)], [notice(2), notice(3), notice(4)]]


async def test_a_failed_publish_is_logged_and_later_notices_still_go_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    publish = Publisher(fail_first=True)
    publish.release.set()
    late = LateNotices(publish)

    late.send([notice(1)])
    await late.flush()
    late.send([notice(2)])
    await late.flush()

    assert publish.published == [[notice(1)], [notice(2)]]
    assert "could not publish 1 update notices" in caplog.text


async def test_nothing_is_published_for_no_notices() -> None:
    publish = Publisher()
    late = LateNotices(publish)

    late.send([])
    await late.flush()

    assert publish.published == []
