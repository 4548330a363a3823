"""worker_sdk workers as real processes: killed, stopped, and outliving a dispatcher restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ROOT, DispatcherProcess, Stack, free_port, read_ledger
from tests.e2e.test_processes import eventually
from worker_sdk import Client, JobOptions, JobRequest, JobState

pytestmark = pytest.mark.slow


def start_sdk_worker(
    address: str,
    ledger: Path,
    concurrency: int,
    grace_s: float = 5,
    sleep_scale: float = 1,
    flags: tuple[str, ...] = (),
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "worker_sdk",
            "run",
            "tests.e2e.sdk_app:worker",
            "--address",
            address,
            "--concurrency",
            str(concurrency),
            "--shutdown-grace",
            str(grace_s),
            "--log-level",
            "WARNING",
            *flags,
        ],
        cwd=ROOT,
        env={**os.environ, "LEDGER": str(ledger), "SLEEP_SCALE": str(sleep_scale)},
    )


def starts(ledger: Path) -> list[str]:
    return [job for kind, job, _ in read_ledger(ledger) if kind == "start"]


def ends(ledger: Path) -> Counter[str]:
    return Counter(job for kind, job, _ in read_ledger(ledger) if kind == "end")


async def enqueue(client: Client, n: int, job_type: str, seconds: float, **kw: Any) -> list[str]:
    options = JobOptions(**kw)
    results = await client.enqueue_many(
        [JobRequest("q", job_type, {"s": seconds}, options) for _ in range(n)]
    )
    return [r.job.id for r in results]  # type: ignore[union-attr]


async def all_in(client: Client, ids: list[str], state: JobState) -> bool:
    return all([(await client.get(i)).state is state for i in ids])


async def test_a_sigkilled_sdk_worker_has_every_job_redelivered_and_completed_once(
    stack: Stack, tmp_path: Path, processes: list[Any]
) -> None:
    d = DispatcherProcess(stack, free_port())
    processes.append(d.proc)
    ledger = tmp_path / "ledger"
    async with Client(d.address) as client:
        ids = await enqueue(client, 12, "sleep", 30, lease_duration=timedelta(seconds=2))
        first = start_sdk_worker(d.address, ledger, concurrency=6)
        processes.append(first)
        await eventually(lambda: len(starts(ledger)) == 6, what="six jobs to start")
        in_flight = set(starts(ledger))
        first.kill()
        first.wait(10)
        processes.append(start_sdk_worker(d.address, ledger, concurrency=6, sleep_scale=0))
        await eventually(lambda: all_in(client, ids, JobState.SUCCEEDED), what="all to succeed")
        jobs = [await client.get(i) for i in ids]
    assert ends(ledger) == Counter(ids)  # each handler completed exactly once
    assert {j.id for j in jobs if j.attempt == 2} == in_flight
    assert {j.attempt for j in jobs if j.id not in in_flight} == {1}


async def test_sigterm_lets_running_jobs_finish_and_gives_back_the_rest_at_once(
    stack: Stack, tmp_path: Path, processes: list[Any]
) -> None:
    d = DispatcherProcess(stack, free_port())
    processes.append(d.proc)
    ledger = tmp_path / "ledger"
    async with Client(d.address) as client:
        hour = timedelta(hours=1)  # no lease would expire during this test
        short = await enqueue(client, 2, "sleep", 1, lease_duration=hour, max_attempts=1)
        long = await enqueue(client, 2, "sleep", 600, lease_duration=hour, max_attempts=1)
        worker = start_sdk_worker(d.address, ledger, concurrency=4, grace_s=3)
        processes.append(worker)
        await eventually(lambda: len(starts(ledger)) == 4, what="four jobs to start")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
        finished = [await client.get(i) for i in short]
        given_back = [await client.get(i) for i in long]
    assert {j.state for j in finished} == {JobState.SUCCEEDED}
    assert {(j.state, j.attempt) for j in given_back} == {(JobState.QUEUED, 0)}


async def test_an_sdk_worker_carries_on_by_itself_across_a_dispatcher_restart(
    stack: Stack, tmp_path: Path, processes: list[Any]
) -> None:
    port = free_port()
    d = DispatcherProcess(stack, port)
    processes.append(d.proc)
    ledger = tmp_path / "ledger"
    worker = start_sdk_worker(d.address, ledger, concurrency=4)
    processes.append(worker)
    async with Client(d.address) as client:
        before = await enqueue(client, 5, "quick", 0)
        await eventually(lambda: all_in(client, before, JobState.SUCCEEDED), what="first five")
    d.kill()
    d = DispatcherProcess(stack, port)
    processes.append(d.proc)
    async with Client(d.address) as client:
        after = await enqueue(client, 5, "quick", 0)
        await eventually(lambda: all_in(client, after, JobState.SUCCEEDED), what="next five")
    assert worker.poll() is None
    assert ends(ledger) == Counter(before + after)


async def test_a_handler_running_for_several_lease_durations_keeps_its_lease(
    stack: Stack, tmp_path: Path, processes: list[Any]
) -> None:
    d = DispatcherProcess(stack, free_port())
    processes.append(d.proc)
    ledger = tmp_path / "ledger"
    processes.append(start_sdk_worker(d.address, ledger, concurrency=2))
    async with Client(d.address) as client:
        (job_id,) = await enqueue(client, 1, "sleep", 3.5, lease_duration=timedelta(seconds=1))
        await eventually(lambda: all_in(client, [job_id], JobState.SUCCEEDED), what="success")
        job = await client.get(job_id)
    assert job.attempt == 1
    assert starts(ledger) == [job_id]


@pytest.mark.parametrize(
    ("flags", "loop"),
    [
        ((), "uvloop.Loop"),
        (("--event-loop", "asyncio"), "asyncio.unix_events._UnixSelectorEventLoop"),
    ],
)
async def test_an_sdk_worker_runs_its_jobs_on_uvloop_unless_told_to_use_asyncio(
    stack: Stack, tmp_path: Path, processes: list[Any], flags: tuple[str, ...], loop: str
) -> None:
    d = DispatcherProcess(stack, free_port())
    processes.append(d.proc)
    processes.append(start_sdk_worker(d.address, tmp_path / "ledger", 2, flags=flags))
    async with Client(d.address) as client:
        job = await client.enqueue("q", "loop", {})
        done = await client.result(job.id, timeout=timedelta(seconds=60))
    assert done.result_json() == {"loop": loop}
