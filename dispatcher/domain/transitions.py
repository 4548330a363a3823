"""The job state machine, as pure functions from a job to its next version.

    enqueue ──> QUEUED ─────lease────> LEASED ──ack──> SUCCEEDED
        │         ▲                    │ │ │
        │         │ run_at / backoff   │ │ └─nack(no retry) or attempts used─> DEAD_LETTERED
        └──> SCHEDULED <──nack(retry)──┘ │
                  ▲                       ├─lease expired (attempts left)──> QUEUED
                  │                       └─nack(release): given back, attempt not counted──> QUEUED
                  │
    cancel: QUEUED/SCHEDULED ──> CANCELLED at once; LEASED ──> cancel_requested, then
            the worker's Nack or the lease's expiry ──> CANCELLED (its Ack is refused)
    operator: DEAD_LETTERED ──retry──> QUEUED (attempt 0, old tokens void)
    depends_on: WAITING ──every dependency succeeded──> QUEUED (or SCHEDULED before run_at)
                WAITING ──a dependency dead-lettered or cancelled──> CANCELLED
    timeouts: never leased by start_deadline ──> DEAD_LETTERED (START_DEADLINE_EXCEEDED)
              an attempt past max_run_time ──> DEAD_LETTERED (RUN_TIME_EXCEEDED)

Every function returns a new `Job` with `version + 1`; nothing here does I/O.
A lease is live while the job is LEASED, its token matches, and the clock has
not passed its expiry: that check (`require_live_lease`) is the fence.
"""

from __future__ import annotations

import random

from dispatcher.domain.errors import InvalidTransition, JobCancelled, LeaseExpired
from dispatcher.domain.models import (
    AckItem,
    HeartbeatItem,
    Job,
    JobState,
    NackItem,
    RetryPolicy,
    TerminalReason,
    evolve,
)

LEASE_EXPIRED_ERROR = "lease expired: the worker stopped heartbeating"
RELEASED_ERROR = "given back unfinished by its worker"
RUN_TIME_EXCEEDED_ERROR = "the attempt ran longer than its max_run_time"
START_DEADLINE_ERROR = "not leased before its start deadline"
MAX_ERROR_CHARS = 4096


def require_live_lease(job: Job, token: str, now_ms: int) -> None:
    """Raise `LeaseExpired` unless `token` is the job's current, unexpired lease."""
    live = (
        job.state is JobState.LEASED
        and job.lease_token == token
        and job.lease_expires_ms is not None
        and job.lease_expires_ms > now_ms
    )
    if not live:
        raise LeaseExpired(
            "the lease is no longer held: it expired, was superseded, or the job finished",
            {"job_id": job.id},
        )


def lease(job: Job, token: str, worker_id: str, now_ms: int, duration_ms: int) -> Job:
    """QUEUED -> LEASED, starting attempt + 1."""
    if job.state is not JobState.QUEUED:
        raise InvalidTransition(f"cannot lease a {job.state} job", {"job_id": job.id})
    return evolve(
        job,
        state=JobState.LEASED,
        attempt=job.attempt + 1,
        version=job.version + 1,
        started_ms=now_ms,
        lease_token=token,
        lease_holder=worker_id,
        lease_expires_ms=(
            now_ms + duration_ms
            if job.max_run_ms is None
            else min(now_ms + duration_ms, now_ms + job.max_run_ms)
        ),
        lease_duration_ms=duration_ms,
        progress_percent=0.0,
        progress_message="",
    )


def _capped_expiry(job: Job, expiry_ms: int) -> int:
    """No lease outlives the attempt's maximum run time."""
    if job.max_run_ms is None or job.started_ms is None:
        return expiry_ms
    return min(expiry_ms, job.started_ms + job.max_run_ms)


def extend(job: Job, item: HeartbeatItem, now_ms: int) -> Job:
    """Renew a live lease to now + duration (not additive) and record progress.

    Not a state transition: the version stays the same.
    """
    require_live_lease(job, item.token, now_ms)
    duration = item.lease_duration_ms or job.lease_duration_ms
    return evolve(
        job,
        lease_expires_ms=_capped_expiry(job, now_ms + duration),
        progress_percent=(
            job.progress_percent if item.progress_percent is None else item.progress_percent
        ),
        progress_message=(
            job.progress_message if item.progress_message is None else item.progress_message
        ),
    )


def ack(job: Job, item: AckItem, now_ms: int) -> Job:
    """LEASED -> SUCCEEDED, unless the job was cancelled meanwhile."""
    require_live_lease(job, item.token, now_ms)
    if job.cancel_requested:
        raise JobCancelled("the job was cancelled; nack it", {"job_id": job.id})
    return evolve(
        job,
        state=JobState.SUCCEEDED,
        terminal_reason=TerminalReason.SUCCEEDED,
        version=job.version + 1,
        finished_ms=now_ms,
        result=item.result,
        result_content_type=item.result_content_type,
        lease_expires_ms=None,
        progress_percent=100.0,
    )


def already_acked(job: Job, token: str) -> bool:
    """True if this exact lease already succeeded, so a repeated Ack is harmless."""
    return job.state is JobState.SUCCEEDED and job.lease_token == token


def already_nacked(job: Job, token: str) -> bool:
    """True if this exact lease was already failed, so a repeated Nack is harmless."""
    return job.lease_token == token and job.state in (
        JobState.SCHEDULED,
        JobState.QUEUED,
        JobState.DEAD_LETTERED,
        JobState.CANCELLED,
    )


def nack(job: Job, item: NackItem, now_ms: int, rng: random.Random) -> Job:
    """LEASED -> SCHEDULED (retry after backoff), QUEUED (retry now) or DEAD_LETTERED."""
    require_live_lease(job, item.token, now_ms)
    if item.release:
        return release(job, item.error, now_ms, rng)
    return fail(job, item.error, item.retry, item.retry_after_ms, now_ms, rng)


def release(job: Job, error: str, now_ms: int, rng: random.Random) -> Job:
    """LEASED -> QUEUED at once, the attempt not counted: a worker shutting down gives it back.

    Not a failure of the job, so it must not use up an attempt; a job whose
    cancellation was requested ends CANCELLED as on any other Nack.
    """
    if job.cancel_requested:
        return fail(job, error or RELEASED_ERROR, True, 0, now_ms, rng)
    return evolve(
        job,
        state=JobState.QUEUED,
        version=job.version + 1,
        attempt=max(job.attempt - 1, 0),
        run_at_ms=now_ms,
        lease_expires_ms=None,
        last_error=(error or RELEASED_ERROR)[:MAX_ERROR_CHARS],
    )


def expire(job: Job, now_ms: int, rng: random.Random) -> Job:
    """A lease ran out: the same failure path as a Nack, retried at once.

    The token is voided: a late Nack from the old holder must be refused, not
    mistaken for a repeat of a Nack that ended this lease.
    """
    return evolve(_expire(job, now_ms, rng), lease_token="")


def _expire(job: Job, now_ms: int, rng: random.Random) -> Job:
    if job.state is not JobState.LEASED or job.lease_expires_ms is None:
        raise InvalidTransition(f"cannot expire a {job.state} job", {"job_id": job.id})
    if job.lease_expires_ms > now_ms:
        raise InvalidTransition("the lease has not expired", {"job_id": job.id})
    if job.max_run_ms is not None and now_ms >= (job.started_ms or 0) + job.max_run_ms:
        return evolve(
            job,
            state=JobState.DEAD_LETTERED,
            version=job.version + 1,
            finished_ms=now_ms,
            lease_expires_ms=None,
            last_error=RUN_TIME_EXCEEDED_ERROR,
            terminal_reason=TerminalReason.RUN_TIME_EXCEEDED,
        )
    return fail(job, LEASE_EXPIRED_ERROR, True, 0, now_ms, rng)


def fail(
    job: Job, error: str, retry: bool, retry_after_ms: int | None, now_ms: int, rng: random.Random
) -> Job:
    """Fail the current attempt: retry if allowed and attempts remain, else dead-letter.

    A job whose cancellation was requested while it ran ends CANCELLED instead.
    """
    error = error[:MAX_ERROR_CHARS]
    base = evolve(job, version=job.version + 1, last_error=error, lease_expires_ms=None)
    if job.cancel_requested:
        return evolve(
            base,
            state=JobState.CANCELLED,
            finished_ms=now_ms,
            terminal_reason=TerminalReason.CANCELLED,
        )
    if not retry or job.attempt >= job.max_attempts:
        reason = TerminalReason.NOT_RETRYABLE if not retry else TerminalReason.ATTEMPTS_EXHAUSTED
        return evolve(
            base, state=JobState.DEAD_LETTERED, finished_ms=now_ms, terminal_reason=reason
        )
    if retry_after_ms is None:
        retry_after_ms = backoff_ms(job.retry_policy, job.attempt, rng)
    state = JobState.QUEUED if retry_after_ms <= 0 else JobState.SCHEDULED
    return evolve(base, state=state, run_at_ms=now_ms + max(retry_after_ms, 0))


def cancel(job: Job, reason: str, now_ms: int) -> Job:
    """QUEUED/SCHEDULED -> CANCELLED at once; LEASED -> cancel requested (same state).

    Cancelling a cancelled job changes nothing.
    """
    if job.state is JobState.CANCELLED or (job.state is JobState.LEASED and job.cancel_requested):
        return job
    if job.state in (JobState.QUEUED, JobState.SCHEDULED, JobState.WAITING):
        return evolve(
            job,
            state=JobState.CANCELLED,
            version=job.version + 1,
            finished_ms=now_ms,
            last_error=reason[:MAX_ERROR_CHARS],
            terminal_reason=TerminalReason.CANCELLED,
        )
    if job.state is JobState.LEASED:
        return evolve(job, cancel_requested=True, last_error=reason[:MAX_ERROR_CHARS])
    raise InvalidTransition(f"cannot cancel a {job.state} job", {"job_id": job.id})


def past_start_deadline(job: Job, now_ms: int) -> bool:
    return (
        job.attempt == 0
        and job.start_deadline_ms is not None
        and job.start_deadline_ms <= now_ms
        and job.state in (JobState.QUEUED, JobState.SCHEDULED, JobState.WAITING)
    )


def expire_unstarted(job: Job, now_ms: int) -> Job:
    """QUEUED/SCHEDULED/WAITING, never leased, past its start deadline -> DEAD_LETTERED."""
    if not past_start_deadline(job, now_ms):
        raise InvalidTransition("the job is not past its start deadline", {"job_id": job.id})
    return evolve(
        job,
        state=JobState.DEAD_LETTERED,
        version=job.version + 1,
        finished_ms=now_ms,
        last_error=START_DEADLINE_ERROR,
        terminal_reason=TerminalReason.START_DEADLINE_EXCEEDED,
    )


def unblock(job: Job, now_ms: int) -> Job:
    """WAITING -> QUEUED (or SCHEDULED before run_at): every dependency succeeded."""
    if job.state is not JobState.WAITING:
        raise InvalidTransition(f"cannot unblock a {job.state} job", {"job_id": job.id})
    state = JobState.QUEUED if job.run_at_ms <= now_ms else JobState.SCHEDULED
    return evolve(job, state=state, version=job.version + 1)


def fail_dependency(job: Job, dependency_id: str, dependency_state: JobState, now_ms: int) -> Job:
    """WAITING -> CANCELLED: a job it depends on will never succeed."""
    if job.state is not JobState.WAITING:
        raise InvalidTransition(f"cannot cancel a {job.state} job", {"job_id": job.id})
    return evolve(
        job,
        state=JobState.CANCELLED,
        version=job.version + 1,
        finished_ms=now_ms,
        last_error=f"dependency {dependency_id} ended {dependency_state.value}",
        terminal_reason=TerminalReason.DEPENDENCY_FAILED,
    )


def promote(job: Job, now_ms: int) -> Job:
    """SCHEDULED -> QUEUED once run_at has come."""
    if job.state is not JobState.SCHEDULED or job.run_at_ms > now_ms:
        raise InvalidTransition("the job is not due", {"job_id": job.id})
    return evolve(job, state=JobState.QUEUED, version=job.version + 1)


def backoff_ms(policy: RetryPolicy, failed_attempt: int, rng: random.Random) -> int:
    """Delay before the retry that follows attempt `failed_attempt` (1-based).

    min(initial * multiplier^(failed_attempt-1), max), spread by +/- jitter.
    """
    exponent = max(failed_attempt - 1, 0)
    if exponent > 64:  # any multiplier >= 1.0 has long passed max_backoff by then
        raw = float(policy.max_backoff_ms)
    else:
        raw = min(policy.initial_backoff_ms * policy.multiplier**exponent, policy.max_backoff_ms)
    spread = raw * policy.jitter
    return max(0, round(raw + rng.uniform(-spread, spread)))


def retry_dead(job: Job, now_ms: int) -> Job:
    """DEAD_LETTERED -> QUEUED with a fresh attempt count (an operator's decision).

    The last lease token is cleared so that no earlier lease can touch the job again.
    """
    if job.state is not JobState.DEAD_LETTERED:
        raise InvalidTransition(f"cannot retry a {job.state} job", {"job_id": job.id})
    return evolve(
        job,
        state=JobState.QUEUED,
        attempt=0,
        version=job.version + 1,
        run_at_ms=now_ms,
        finished_ms=None,
        terminal_reason=TerminalReason.NONE,
        lease_token="",
        lease_holder="",
        lease_expires_ms=None,
    )
