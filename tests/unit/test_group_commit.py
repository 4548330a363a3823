"""Group commit: calls that arrive during a commit share the next one."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from dispatcher.service.group_commit import GroupCommit


class Recorder:
    """A commit function that records its groups and holds each until released."""

    def __init__(self) -> None:
        self.groups: list[list[str]] = []
        self.release = asyncio.Event()
        self.fail_next = False

    async def commit(self, requests: Sequence[str]) -> list[str]:
        self.groups.append(list(requests))
        await self.release.wait()
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("the database is down")
        return [r.upper() for r in requests]


async def test_a_lone_call_commits_at_once_in_a_group_of_its_own() -> None:
    rec = Recorder()
    rec.release.set()
    group = GroupCommit(rec.commit, max_requests=8)
    assert await group.submit("a") == "A"
    assert rec.groups == [["a"]]


async def test_calls_arriving_during_a_commit_share_the_next_one() -> None:
    rec = Recorder()
    group = GroupCommit(rec.commit, max_requests=8)
    first = asyncio.create_task(group.submit("a"))
    await asyncio.sleep(0)  # the first commit is in flight
    later = [asyncio.create_task(group.submit(x)) for x in ("b", "c", "d")]
    await asyncio.sleep(0)
    rec.release.set()
    assert await first == "A"
    assert [await t for t in later] == ["B", "C", "D"]
    assert rec.groups == [["a"], ["b", "c", "d"]]


async def test_a_group_holds_at_most_max_requests() -> None:
    rec = Recorder()
    rec.release.set()
    group = GroupCommit(rec.commit, max_requests=2)
    out = await asyncio.gather(*(group.submit(x) for x in "abcde"))
    assert out == list("ABCDE")
    assert rec.groups == [["a", "b"], ["c", "d"], ["e"]]


async def test_a_failed_commit_fails_every_call_in_it_and_the_next_group_still_runs() -> None:
    rec = Recorder()
    rec.fail_next = True
    group = GroupCommit(rec.commit, max_requests=8)
    doomed = [asyncio.create_task(group.submit(x)) for x in ("a", "b")]
    await asyncio.sleep(0)
    rec.release.set()
    for t in doomed:
        with pytest.raises(RuntimeError, match="database is down"):
            await t
    assert await group.submit("c") == "C"


async def test_a_caller_gone_before_its_group_began_is_left_out() -> None:
    rec = Recorder()
    group = GroupCommit(rec.commit, max_requests=8)
    first = asyncio.create_task(group.submit("a"))
    await asyncio.sleep(0)
    gone = asyncio.create_task(group.submit("b"))
    stays = asyncio.create_task(group.submit("c"))
    await asyncio.sleep(0)
    gone.cancel()
    rec.release.set()
    assert (await first, await stays) == ("A", "C")
    assert rec.groups == [["a"], ["c"]]
