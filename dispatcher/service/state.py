"""Whether this replica serves: rebuilding its index, serving, or draining."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from enum import Enum

from dispatcher.domain.errors import IndexRebuilding, ShuttingDown


class Phase(Enum):
    STARTING = "starting"
    REBUILDING = "rebuilding"
    SERVING = "serving"
    DRAINING = "draining"


class ServingState:
    """The replica's phase, shared by the servicer, the health check and background loops."""

    def __init__(self) -> None:
        self.phase = Phase.STARTING
        self.draining = asyncio.Event()
        self.store_healthy = True
        self.repair_requested = asyncio.Event()
        self._on_drain: list[Callable[[], None]] = []

    @property
    def serving(self) -> bool:
        return self.phase is Phase.SERVING and self.store_healthy

    def require_serving(self) -> None:
        """Raise the Unavailable error that says why this replica is not serving."""
        if self.phase is Phase.DRAINING:
            raise ShuttingDown("the server is shutting down")
        if self.phase is not Phase.SERVING:
            raise IndexRebuilding("the server is rebuilding its index from the database")

    def on_drain(self, wake: Callable[[], None]) -> None:
        """Call `wake` when draining starts (now, if it has): how a wait that
        does not watch `draining` itself learns of it."""
        self._on_drain.append(wake)
        if self.draining.is_set():
            wake()

    def start_draining(self) -> None:
        self.phase = Phase.DRAINING
        self.draining.set()
        for wake in self._on_drain:
            wake()

    def request_repair(self) -> None:
        """Ask the reconciler to run soon (an index write failed after a commit)."""
        self.repair_requested.set()
