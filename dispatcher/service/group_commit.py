"""Group commit: concurrent requests share one transaction.

Each SQL transaction has a fixed cost (a pool checkout, BEGIN, COMMIT and its
flush to disk, a round trip per statement) that one Enqueue pays alone when
calls come one by one. `GroupCommit` lets calls that arrive while a commit is
in flight wait for the next one, which then carries all of them: there is no
timer, so a lone call goes at once, and under load each commit carries what
gathered during the last one.

A caller that goes away does not take its request back once the group has
started: the group commits it anyway, as a single call would have.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Req = TypeVar("Req")
Res = TypeVar("Res")


class GroupCommit(Generic[Req, Res]):
    """Runs `commit(requests) -> one result per request` for requests gathered meanwhile."""

    def __init__(
        self, commit: Callable[[Sequence[Req]], Awaitable[Sequence[Res]]], max_requests: int
    ) -> None:
        self._commit = commit
        self._max = max_requests
        self._pending: list[tuple[Req, asyncio.Future[Res]]] = []
        self._leader: asyncio.Task[None] | None = None

    async def submit(self, request: Req) -> Res:
        future: asyncio.Future[Res] = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        if self._leader is None:
            self._leader = asyncio.create_task(self._lead())
        return await future

    async def _lead(self) -> None:
        try:
            while self._pending:
                group, self._pending = self._pending[: self._max], self._pending[self._max :]
                group = [(r, f) for r, f in group if not f.done()]  # callers gone before it began
                if group:
                    await self._run(group)
        finally:
            self._leader = None

    async def _run(self, group: list[tuple[Req, asyncio.Future[Res]]]) -> None:
        try:
            results = await self._commit([r for r, _ in group])
        except BaseException as exc:  # the shared transaction failed: so did every call in it
            for _, f in group:
                if f.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    f.cancel()
                else:
                    f.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, f), result in zip(group, results, strict=True):
            if not f.done():
                f.set_result(result)
