"""Idempotency keys: what a second Enqueue with a key already used gets.

Within the window (from the first job's creation) the same key returns the
first job, whatever its state, with its result if done. The same key with a
different request (queue, type, payload or content type) is refused with
ALREADY_EXISTS: it is a client bug, not a retry. After the window the key is
free again: the old job keeps running or stays finished, but loses the key.
"""

from __future__ import annotations

from enum import Enum

from dispatcher.domain.errors import AlreadyExists
from dispatcher.domain.models import Job, JobSpec


class Decision(Enum):
    REUSE = "reuse"  # return the existing job
    RELEASE = "release"  # the window passed: take the key from the old job, create anew


def same_request(job: Job, spec: JobSpec) -> bool:
    return (job.queue, job.type, job.payload, job.content_type) == (
        spec.queue,
        spec.type,
        spec.payload,
        spec.content_type,
    )


def past_window(created_ms: int, now_ms: int, window_ms: int) -> bool:
    """Whether a key (or an EnqueueBatch's request_id) made at `created_ms` is free again."""
    return created_ms + window_ms <= now_ms


def decide(existing: Job, spec: JobSpec, now_ms: int, window_ms: int) -> Decision:
    if past_window(existing.created_ms, now_ms, window_ms):
        return Decision.RELEASE
    if not same_request(existing, spec):
        raise AlreadyExists(
            "this idempotency key was used for a different job",
            {"job_id": existing.id, "idempotency_key": spec.idempotency_key[:64]},
        )
    return Decision.REUSE
