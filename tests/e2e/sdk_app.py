"""A worker_sdk worker for e2e tests: `python -m worker_sdk run tests.e2e.sdk_app:worker`.

Appends to the file named by LEDGER: "start <job> <attempt>" when a handler
starts and "end <job> <attempt>" when it returns. Job types: "sleep" sleeps
payload["s"] seconds (times SLEEP_SCALE from the environment, default 1);
"quick" returns at once; "loop" returns the class of the event loop it runs on.
"""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta

from worker_sdk import JobContext, Worker, WorkerOptions

worker = Worker(WorkerOptions(queues=("q",), poll_wait=timedelta(seconds=2)))


def _log(line: str) -> None:
    with open(os.environ["LEDGER"], "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


@worker.handler("sleep")
async def sleep(job: JobContext) -> dict[str, str]:
    _log(f"start {job.id} {job.attempt}")
    await asyncio.sleep(float(job.json()["s"]) * float(os.environ.get("SLEEP_SCALE", "1")))
    _log(f"end {job.id} {job.attempt}")
    return {"by": str(os.getpid())}


@worker.handler("quick")
async def quick(job: JobContext) -> dict[str, str]:
    _log(f"start {job.id} {job.attempt}")
    _log(f"end {job.id} {job.attempt}")
    return {"by": str(os.getpid())}


@worker.handler("loop")
async def loop(job: JobContext) -> dict[str, str]:
    running = type(asyncio.get_running_loop())
    return {"loop": f"{running.__module__}.{running.__qualname__}"}
