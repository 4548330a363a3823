"""The one clock that lease times come from.

Every replica reads time through a `Clock`. In production that is a
`RedisClock`: Redis's `TIME`, read once and then advanced with the local
monotonic clock, so replicas with skewed wall clocks still agree on when a
lease expires. Tests use `FakeClock` and advance it instead of sleeping.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """A source of the current time in Unix milliseconds."""

    def now_ms(self) -> int:
        """Return the current time in milliseconds since the Unix epoch."""
        ...


class SystemClock:
    """The local wall clock."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class FakeClock:
    """A clock that moves only when a test moves it."""

    def __init__(self, start_ms: int = 1_800_000_000_000) -> None:
        self._now_ms = start_ms

    def now_ms(self) -> int:
        return self._now_ms

    def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`."""
        self._now_ms += round(seconds * 1000)


class RedisClock:
    """Redis's clock, sampled with `sync()` and extrapolated with the monotonic clock."""

    def __init__(self) -> None:
        self._base_ms = time.time_ns() // 1_000_000
        self._base_mono_ns = time.monotonic_ns()

    def set_reference(self, redis_now_ms: int) -> None:
        """Anchor the clock to a time read from Redis `TIME`."""
        self._base_ms = redis_now_ms
        self._base_mono_ns = time.monotonic_ns()

    def now_ms(self) -> int:
        return self._base_ms + (time.monotonic_ns() - self._base_mono_ns) // 1_000_000
