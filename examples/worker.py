"""An example worker: `python -m worker_sdk run examples.worker:worker --queues default`."""

from __future__ import annotations

import asyncio

from worker_sdk import JobContext, NonRetryable, Worker, WorkerOptions

worker = Worker(WorkerOptions(queues=("default",), concurrency=10))


@worker.handler("add")
async def add(job: JobContext) -> dict[str, int]:
    numbers = job.json()
    return {"sum": numbers["a"] + numbers["b"]}


@worker.handler("resize")
def resize(job: JobContext) -> bytes:  # a plain function runs in a thread
    for step in range(1, 5):
        if job.cancelled:
            raise NonRetryable("cancelled")
        job.progress(step * 25, f"step {step} of 4")
    return b"resized"


@worker.handler("sleep")
async def sleep(job: JobContext) -> None:
    await asyncio.sleep(float(job.json()["seconds"]))
