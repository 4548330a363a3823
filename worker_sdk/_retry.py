"""Retrying calls on an allow-list of codes, with jittered exponential backoff."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from worker_sdk.errors import DispatcherError, from_rpc_error
from worker_sdk.options import RetryOptions

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Safe to repeat whatever happened to the first try: reads, and completions fenced by tokens.
IDEMPOTENT_ONLY = frozenset({grpc.StatusCode.DEADLINE_EXCEEDED})


def delay_s(attempt: int, o: RetryOptions, rng: random.Random) -> float:
    """Seconds to wait after failed try number `attempt` (1-based)."""
    base = min(
        o.initial.total_seconds() * o.multiplier ** max(attempt - 1, 0), o.maximum.total_seconds()
    )
    return max(0.0, base * rng.uniform(1 - o.jitter, 1 + o.jitter))


def retryable(err: DispatcherError, o: RetryOptions, idempotent: bool) -> bool:
    return err.code in o.codes or (idempotent and err.code in IDEMPOTENT_ONLY)


async def call(
    fn: Callable[[], Awaitable[T]],
    o: RetryOptions,
    *,
    idempotent: bool,
    rng: random.Random | None = None,
) -> T:
    """Await `fn()`, retrying allowed failures; raise the last one as a DispatcherError."""
    rng = rng or random.Random()
    attempt = 0
    while True:
        attempt += 1
        try:
            return await fn()
        except grpc.aio.AioRpcError as exc:
            err = from_rpc_error(exc)
        if attempt >= o.max_attempts or not retryable(err, o, idempotent):
            raise err
        wait = delay_s(attempt, o, rng)
        if err.retry_after is not None:  # the server knows better (a full queue, a quota)
            wait = max(wait, min(err.retry_after.total_seconds(), o.maximum.total_seconds()))
        logger.debug("call failed (%s); retry %d in %.3fs", err.code.name, attempt, wait)
        await asyncio.sleep(wait)


class Backoff:
    """Delays for a loop that must keep trying (a worker's lease loop): reset on success."""

    def __init__(self, o: RetryOptions, rng: random.Random | None = None) -> None:
        self.o = o
        self.rng = rng or random.Random()
        self.failures = 0

    def next_delay_s(self) -> float:
        self.failures += 1
        return delay_s(self.failures, self.o, self.rng)

    def reset(self) -> None:
        self.failures = 0
