"""bench.measure's enqueue-only phases run `repeats` times, N jobs each, and
report the median rate, keeping every run's rate beside it."""

from __future__ import annotations

import statistics
from typing import Any

from bench.measure import phase_enqueue_batch, phase_enqueue_concurrent
from bench.report import NO_BATCH_API, SystemResult


class CountingPeer:
    """A peer whose enqueue paths only record how they were called."""

    batch_api: str | None = "enqueue_many"
    concurrent_api: str | None = "coalescing client"

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int, int]] = []

    async def enqueue_batch(self, tag: str, n: int, size: int) -> None:
        self.calls.append(("batch", tag, n, size))

    async def enqueue_concurrent(self, tag: str, n: int, callers: int) -> None:
        self.calls.append(("concurrent", tag, n, callers))


CFG: dict[str, Any] = {"jobs": 500, "batch_size": 100, "callers": 10, "repeats": 3}


async def test_the_batch_phase_runs_n_jobs_each_repeat_and_reports_the_median() -> None:
    peer, res = CountingPeer(), SystemResult("x", "peer")

    await phase_enqueue_batch(peer, CFG, res)  # type: ignore[arg-type]

    assert peer.calls == [("batch", "batch", 500, 100)] * 3
    each = res.details["enqueue_batch_per_s_each"]
    assert len(each) == 3 and all(rate > 0 for rate in each)
    assert res.metrics["enqueue_batch_per_s"] == statistics.median(each)


async def test_the_concurrent_phase_runs_n_jobs_each_repeat_and_reports_the_median() -> None:
    peer, res = CountingPeer(), SystemResult("x", "ours")

    await phase_enqueue_concurrent(peer, CFG | {"repeats": 2}, res)  # type: ignore[arg-type]

    assert peer.calls == [("concurrent", "conc", 500, 10)] * 2
    each = res.details["enqueue_concurrent_per_s_each"]
    assert len(each) == 2
    assert res.metrics["enqueue_concurrent_per_s"] == statistics.median(each)


async def test_a_peer_without_a_batch_api_is_not_called_and_says_so() -> None:
    peer, res = CountingPeer(), SystemResult("x", "peer")
    peer.batch_api = None

    await phase_enqueue_batch(peer, CFG, res)  # type: ignore[arg-type]

    assert peer.calls == []
    assert res.missing["enqueue_batch_per_s"] == NO_BATCH_API
    assert "enqueue_batch_per_s" not in res.metrics
