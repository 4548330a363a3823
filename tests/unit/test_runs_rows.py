"""Rows of the runs table decode by position: the order must be the table's, and
every column must land in its own Job field."""

from __future__ import annotations

from sqlalchemy import create_engine, select

from dispatcher.api.convert import to_proto_job
from dispatcher.domain.models import Job, JobState, Priority, RetryPolicy, TerminalReason
from dispatcher.store.sql.runs import job_to_row, row_to_job
from dispatcher.store.sql.tables import metadata, runs


def job_with_every_field_distinct() -> Job:
    # Every column's value differs from every other's (as Python compares them:
    # True == 1, so no 0 or 1 besides the booleans), so that two names swapped
    # in row_to_job's unpacking give a different Job.
    return Job(
        id="01JROWTEST0000000000000001",
        namespace="ns-a",
        queue="queue-b",
        type="type-c",
        payload=b"payload-d",
        content_type="application/e",
        priority=Priority.LOW,
        metadata={"m": "1"},
        state=JobState.LEASED,
        attempt=2,
        max_attempts=7,
        retry_policy=RetryPolicy(1_001, 60_003, 2.5, 0.25),
        lease_duration_ms=30_005,
        created_ms=1_000_006,
        run_at_ms=1_000_007,
        version=8,
        idempotency_key="key-f",
        progress_percent=42.5,
        progress_message="message-g",
        started_ms=1_000_009,
        finished_ms=1_000_010,
        last_error="error-h",
        result=b"result-i",
        result_content_type="text/j",
        lease_holder="holder-k",
        lease_token="token-l",
        lease_expires_ms=1_000_011,
        trace_context={"traceparent": "tp"},
        callback_url="https://example.test/m",
        cancel_requested=True,
        terminal_reason=TerminalReason.NOT_RETRYABLE,
        start_deadline_ms=1_000_012,
        max_run_ms=1_000_013,
        depends_on=["01JROWTEST0000000000000000"],
        has_dependents=False,
        concurrency_key="ckey-n",
        lease_principal="principal-o",
    )


def test_no_two_columns_of_the_sample_job_hold_equal_values() -> None:
    values = list(job_to_row(job_with_every_field_distinct()).values())
    assert len(values) == len(runs.columns)
    equal = [(a, b) for i, a in enumerate(values) for b in values[i + 1 :] if a == b]
    assert equal == []


def test_a_job_read_back_from_its_row_equals_the_job_written() -> None:
    engine = create_engine("sqlite://")
    metadata.create_all(engine)
    job = job_with_every_field_distinct()
    with engine.begin() as conn:
        conn.execute(runs.insert(), job_to_row(job))
        (row,) = conn.execute(select(runs)).all()
    assert row_to_job(row) == job


def test_a_job_with_empty_maps_converts_to_a_message_with_empty_maps() -> None:
    job = job_with_every_field_distinct()
    full = to_proto_job(job)
    assert dict(full.metadata) == {"m": "1"}
    assert dict(full.trace_context) == {"traceparent": "tp"}
    assert list(full.depends_on) == ["01JROWTEST0000000000000000"]
    assert full.retry_policy.initial_backoff.ToMilliseconds() == 1_001

    bare = to_proto_job(
        Job(**{**job.__dict__, "metadata": {}, "trace_context": {}, "depends_on": []})
    )
    assert len(bare.metadata) == 0 and len(bare.trace_context) == 0 and not bare.depends_on


def test_changing_a_converted_jobs_retry_policy_leaves_the_next_conversion_alone() -> None:
    job = job_with_every_field_distinct()
    first = to_proto_job(job)
    first.retry_policy.multiplier = 99.0  # the policy message is shared by conversions
    assert to_proto_job(job).retry_policy.multiplier == 2.5
