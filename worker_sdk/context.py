"""What a handler gets (`JobContext`) and the exceptions it can raise to steer retries."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

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
        self.job = job
        self.worker_id = worker_id
        self._progress: Progress | None = None
        self._lock = threading.Lock()  # plain handlers report from their own thread
        # A plain flag, not a threading.Event: nothing waits on it, handlers in
        # threads only read it, and an Event costs a Condition per job.
        self._cancelled = False

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def attempt(self) -> int:
        """1 for the first attempt."""
        return self.job.attempt

    @property
    def payload(self) -> bytes:
        return self.job.payload

    def json(self) -> Any:
        """The payload decoded from JSON."""
        return self.job.json()

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
