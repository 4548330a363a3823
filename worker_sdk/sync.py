"""`SyncClient`: the producer client for code that is not async (Django views, scripts).

It runs a `Client` on an event loop in a private daemon thread; each method
blocks until its call is done. Safe to share between threads.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator, Sequence
from datetime import timedelta
from types import TracebackType
from typing import Any, Self, TypeVar

from worker_sdk.client import Client
from worker_sdk.errors import DispatcherError
from worker_sdk.options import ConnectOptions
from worker_sdk.schedules import MisfirePolicy, Schedule
from worker_sdk.types import Enqueued, Job, JobOptions, JobRequest, JobUpdate, JobView

T = TypeVar("T")


class SyncClient:
    """The blocking twin of `Client`: same methods, same errors, no `await`."""

    def __init__(self, options: ConnectOptions | str | None = None) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="dispatcher-client", daemon=True
        )
        self._thread.start()
        self._client = Client(options)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def close(self) -> None:
        """Close the channel and stop the client's thread."""
        if self._loop.is_closed():
            return
        self._run(self._client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    @property
    def schedules(self) -> SyncSchedules:
        """See `Client.schedules`."""
        return SyncSchedules(self)

    @property
    def options(self) -> ConnectOptions:
        return self._client.options

    def enqueue(
        self, queue: str, type: str, payload: Any = b"", options: JobOptions | None = None
    ) -> Job:
        """See `Client.enqueue`."""
        return self._run(self._client.enqueue(queue, type, payload, options))

    def enqueue_many(
        self, requests: Iterable[JobRequest], *, view: JobView = JobView.FULL
    ) -> list[Enqueued | DispatcherError]:
        """See `Client.enqueue_many`."""
        return self._run(self._client.enqueue_many(list(requests), view=view))

    def get(self, job_id: str) -> Job:
        """See `Client.get`."""
        return self._run(self._client.get(job_id))

    def cancel(self, job_id: str, reason: str = "") -> Job:
        """See `Client.cancel`."""
        return self._run(self._client.cancel(job_id, reason))

    def wait(self, job_id: str, timeout: timedelta | None = None) -> Job:
        """See `Client.wait`."""
        return self._run(self._client.wait(job_id, timeout))

    def result(self, job_id: str, timeout: timedelta | None = None) -> Job:
        """See `Client.result`."""
        return self._run(self._client.result(job_id, timeout))

    def updates(self, job_ids: Sequence[str] = (), queue: str = "") -> Iterator[JobUpdate]:
        """See `Client.updates`; closing the iterator closes the stream."""
        stream: AsyncIterator[JobUpdate] = self._client.updates(job_ids, queue)
        try:
            while True:
                try:
                    yield self._run(anext(stream))  # type: ignore[arg-type]
                except StopAsyncIteration:
                    return
        finally:
            self._run(stream.aclose())  # type: ignore[attr-defined]


class SyncSchedules:
    """The blocking twin of `Schedules`."""

    def __init__(self, owner: SyncClient) -> None:
        self._owner = owner
        self._async = owner._client.schedules

    def create(
        self,
        name: str,
        job: JobRequest,
        *,
        cron: str | None = None,
        interval: timedelta | None = None,
        timezone: str = "UTC",
        misfire_policy: MisfirePolicy = MisfirePolicy.CATCH_UP_LATEST,
    ) -> Schedule:
        """See `Schedules.create`."""
        return self._owner._run(
            self._async.create(
                name, job, cron=cron, interval=interval, timezone=timezone,
                misfire_policy=misfire_policy,
            )
        )  # fmt: skip

    def get(self, schedule_id: str) -> Schedule:
        """See `Schedules.get`."""
        return self._owner._run(self._async.get(schedule_id))

    def list(self) -> list[Schedule]:
        """See `Schedules.list`."""
        return self._owner._run(self._async.list())

    def pause(self, schedule_id: str) -> Schedule:
        """See `Schedules.pause`."""
        return self._owner._run(self._async.pause(schedule_id))

    def resume(self, schedule_id: str) -> Schedule:
        """See `Schedules.resume`."""
        return self._owner._run(self._async.resume(schedule_id))

    def delete(self, schedule_id: str) -> None:
        """See `Schedules.delete`."""
        self._owner._run(self._async.delete(schedule_id))
