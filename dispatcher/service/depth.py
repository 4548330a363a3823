"""Samples queue depth and the age of the oldest ready job for the metrics gauges.

Gauge callbacks run on the exporter's thread and cannot await Redis, so a
background task samples every few seconds. The age comes from the job id (a
ULID carries its creation time), so a retried job counts from its creation.
"""

from __future__ import annotations

import asyncio
import logging

from dispatcher import telemetry
from dispatcher.clock import Clock
from dispatcher.domain.errors import DispatchError
from dispatcher.domain.models import Priority
from dispatcher.store.redis.index import RedisIndex

logger = logging.getLogger(__name__)

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def created_ms(job_id: str) -> int:
    """The creation time a ULID job id carries in its first 10 characters."""
    value = 0
    for ch in job_id[:10]:
        value = value * 32 + _CROCKFORD.index(ch)
    return value


async def sample_depth(
    index: RedisIndex, clock: Clock
) -> dict[tuple[str, str, str], tuple[int, float]]:
    now = clock.now_ms()
    out: dict[tuple[str, str, str], tuple[int, float]] = {}
    for ns, queue in await index.queues():
        for p, (count, oldest_id) in zip(
            Priority, await index.ready_by_rank(ns, queue), strict=True
        ):
            age = max(0, now - created_ms(oldest_id)) / 1000 if oldest_id else 0.0
            out[(ns, queue, p.name.lower())] = (count, age)
    return out


async def sample_depth_forever(index: RedisIndex, clock: Clock, interval_s: float = 5.0) -> None:
    while True:
        try:
            telemetry.record_depth(await sample_depth(index, clock))
        except DispatchError as exc:
            logger.warning("could not sample queue depth: %s", exc.reason)
        await asyncio.sleep(interval_s)
