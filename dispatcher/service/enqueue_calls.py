"""EnqueueBatch calls made with a request_id (AIP-155): what a call records
with its jobs, and how a repeat of it is answered from that record.

A producer retries a call whose answer it did not get. With an idempotency
key on each job, each job costs an entry in the unique index on keys; with a
request_id the call costs one row (`enqueue_calls`), written in the same
statement or transaction as its jobs. A repeat within the idempotency window
creates nothing: each item gets the job the first call created for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TypeAlias, Union

from dispatcher.domain import idempotency
from dispatcher.domain.errors import (
    DispatchError,
    JobNotFound,
    RefusedByFirstCall,
    RequestIdReused,
)
from dispatcher.domain.models import EnqueueCall, Enqueued, Job, JobSpec

Outcome: TypeAlias = Union[Enqueued, DispatchError]  # noqa: UP007 (as dispatch.Outcome)


def record(
    namespace: str, request_id: str, now_ms: int, size: int, created: Iterable[tuple[int, str]]
) -> EnqueueCall | None:
    """The record of a call of `size` items that creates `created` (item index,
    job id); None when it creates nothing (a repeat then creates what it can)."""
    items: list[str | None] = [None] * size
    for i, job_id in created:
        items[i] = job_id
    if not any(items):
        return None
    return EnqueueCall(namespace, request_id, now_ms, tuple(items))


def expired(call: EnqueueCall, now_ms: int, window_ms: int) -> bool:
    """Past the window, a request_id is free again, as an idempotency key is."""
    return idempotency.past_window(call.created_ms, now_ms, window_ms)


def answer(
    call: EnqueueCall,
    specs: Sequence[JobSpec | DispatchError],
    refused: Mapping[int, DispatchError],
    jobs: Mapping[str, Job],
    field_prefix: str,
) -> dict[int, Outcome]:
    """The answer to each item of a repeat of `call` (`specs`, each item's spec
    or the error it could not be converted with), from the jobs the first call
    created (`jobs`, by id). An item the first call created gets its job even
    if this call refused it (`refused`: its queue has filled up since, say);
    one it refused is refused again, with this call's error if it has one.

    Raises RequestIdReused when the repeat has another number of items: it is
    another call, not a retry."""
    if len(specs) != len(call.items):
        raise RequestIdReused(
            f"this request_id was used for a call of {len(call.items)} jobs, not {len(specs)}",
            {"request_id": call.request_id[:64]},
        )
    out: dict[int, Outcome] = {}
    for i, (spec, job_id) in enumerate(zip(specs, call.items, strict=True)):
        job = None if job_id is None else jobs.get(job_id)
        if job_id is None or isinstance(spec, DispatchError):
            out[i] = refused.get(i) or RefusedByFirstCall(
                f"{field_prefix}[{i}] was refused by the first call with this request_id;"
                " send it under a new request_id",
                {"request_id": call.request_id[:64]},
            )
        elif job is None:
            out[i] = JobNotFound(
                f"the job the first call created for {field_prefix}[{i}] no longer exists",
                {"job_id": job_id},
            )
        elif not idempotency.same_request(job, spec):
            out[i] = RequestIdReused(
                f"this request_id was used with another job at {field_prefix}[{i}]",
                {"request_id": call.request_id[:64], "job_id": job.id},
            )
        else:
            out[i] = Enqueued(job, created=False)
    return out
