"""The event loop `dispatcher serve` and `Worker.run()` run on.

uvloop (libuv under asyncio's interface) where it is installed: on a 2-core
VM it cut the server's CPU per single Enqueue and per drained job by about a
tenth, and a worker's CPU per drained job by about 7% (docs/performance.md,
the table of changes). asyncio's own loop is the fallback (uvloop has no Windows
build) and can be chosen outright. It lives in the SDK, which the server
already imports for its generated code, so both choose the same way.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable

CHOICES = ("auto", "uvloop", "asyncio")
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


class LoopUnavailable(RuntimeError):
    """The chosen event loop cannot be used here."""


def loop_factory(choice: str) -> tuple[str, LoopFactory]:
    """The name and the factory of the loop to run on: "auto" is uvloop if it imports."""
    if choice not in CHOICES:
        raise LoopUnavailable(f"unknown event loop {choice!r}: choose one of {', '.join(CHOICES)}")
    if choice != "asyncio":
        try:
            uvloop = importlib.import_module("uvloop")
        except ImportError:
            if choice == "uvloop":
                raise LoopUnavailable(
                    "event loop 'uvloop' is not installed: pip install uvloop, "
                    "or choose the asyncio loop (--event-loop asyncio)"
                ) from None
        else:
            factory: LoopFactory = uvloop.new_event_loop
            return "uvloop", factory
    return "asyncio", asyncio.new_event_loop
