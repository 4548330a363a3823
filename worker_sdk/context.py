"""What a handler gets (`JobContext`) and the exceptions it can raise to steer retries."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from worker_sdk import _convert
from worker_sdk._proto.dispatch.v1 import job_pb2 as jpb
from worker_sdk.types import Job, Progress


class Retry(Exception):
    """Raise from a handler to fail this attempt and retry after `after` (None: the backoff)."""

    def __init__(self, message: str = "", after: timedelta | None = None) -> None:
        super().__init__(message)
        self.after = after


class NonRetryable(Exception):
    """Raise (or subclass) to dead-letter the job at once: retrying cannot help."""


class JobContext:
    """The job being handled, and a way to report progress.

    Progress is sent with the next heartbeat (coalesced: only the latest
    report is sent). `cancelled` turns true when the job was cancelled or its
    lease was lost; async handlers are cancelled outright, plain functions
    running in threads should check it between steps.
    """

    def __init__(self, job: Job, worker_id: str) -> None:
        self._setup(job, None, worker_id)

    @classmethod
    def _of_lease(cls, leased: jpb.Job, worker_id: str) -> JobContext:
        """The context of a leased job. Converting the proto to a `Job` costs
        4.5 µs (microbenchmark, a drain's worker spends about 120 µs per job in
        all): a handler that reads only the id, attempt or payload never pays
        for it."""
        context = cls.__new__(cls)
        context._setup(None, leased, worker_id)
        return context

    def _setup(self, job: Job | None, leased: jpb.Job | None, worker_id: str) -> None:
        self._job = job
        self._leased = leased  # a leased job's proto, converted when `job` is first read
        self.worker_id = worker_id
        self._progress: Progress | None = None
        self._lock = threading.Lock()  # plain handlers report from their own thread
        # A plain flag, not a threading.Event: nothing waits on it, handlers in
        # threads only read it, and an Event costs a Condition per job.
        self._cancelled = False

    @property
    def job(self) -> Job:
        """The whole job (its options, metadata, trace context, timestamps)."""
        if self._job is None:
            assert self._leased is not None
            self._job = _convert.job(self._leased)
        return self._job

    @property
    def _fields(self) -> jpb.Job | Job:
        """Where the plain fields are read: a leased job's proto, never converted for them."""
        return self._leased if self._leased is not None else self.job

    @property
    def id(self) -> str:
        return self._fields.id

    @property
    def type(self) -> str:
        return self._fields.type

    def _trace_context(self) -> Mapping[str, str]:
        """`job.trace_context`, without converting a leased job for it."""
        return self._fields.trace_context

    @property
    def attempt(self) -> int:
        """1 for the first attempt."""
        return self._fields.attempt

    @property
    def payload(self) -> bytes:
        return self._fields.payload

    def json(self) -> Any:
        """The payload decoded from JSON."""
        payload = self.payload
        return json.loads(payload) if payload else None

    def progress(self, percent: float, message: str = "") -> None:
        """Report progress (0 to 100); sent with the next heartbeat."""
        with self._lock:
            self._progress = Progress(max(0.0, min(100.0, percent)), message)

    @property
    def cancelled(self) -> bool:
        """True once the result of this attempt will not be used (cancelled or lease lost)."""
        return self._cancelled

    def _take_progress(self) -> Progress | None:
        with self._lock:
            progress, self._progress = self._progress, None
            return progress

    def _cancel(self) -> None:
        self._cancelled = True
