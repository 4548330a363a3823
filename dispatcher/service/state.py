"""Whether this replica serves: rebuilding its index, serving, or draining."""

from __future__ import annotations

import asyncio
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

    @property
    def serving(self) -> bool:
        return self.phase is Phase.SERVING and self.store_healthy

    def require_serving(self) -> None:
        """Raise the Unavailable error that says why this replica is not serving."""
        if self.phase is Phase.DRAINING:
            raise ShuttingDown("the server is shutting down")
        if self.phase is not Phase.SERVING:
            raise IndexRebuilding("the server is rebuilding its index from the database")

    def start_draining(self) -> None:
        self.phase = Phase.DRAINING
        self.draining.set()

    def request_repair(self) -> None:
        """Ask the reconciler to run soon (an index write failed after a commit)."""
        self.repair_requested.set()
