"""The Job messages of a reply are filled by `convert.JobMessages`, which copies
the previous message when two jobs differ only in id, payload and key: every
message must still be exactly what `to_proto_job` builds for its job."""

from __future__ import annotations

import dataclasses

from dispatcher.api import convert
from dispatcher.domain.errors import InvalidArgument
from dispatcher.domain.models import Enqueued, GrantedLease, Job
from tests.service.helpers import stored_job
from tests.unit.test_runs_rows import job_with_every_field_distinct
from worker_sdk._proto.dispatch.v1 import job_pb2 as jpb

BASE = stored_job("01JBASE0000000000000000001", metadata={"team": "a"})
OTHER = dataclasses.replace(job_with_every_field_distinct(), wait_reason="waits-p")


def variants() -> list[Job]:
    """The base job, then one job per field of Job with only that field changed."""
    out = [BASE]
    for f in dataclasses.fields(Job):
        changed = dataclasses.replace(BASE, **{f.name: getattr(OTHER, f.name)})
        if changed != BASE:
            out += [changed, BASE]  # and back: the next variant starts from the base
    return out


def test_every_field_of_job_but_one_differs_between_the_base_and_the_other_job() -> None:
    same = [
        f.name for f in dataclasses.fields(Job) if getattr(BASE, f.name) == getattr(OTHER, f.name)
    ]
    assert same == ["has_dependents"]  # not in the message: has no proto field


def test_an_enqueue_batch_reply_holds_each_jobs_own_message() -> None:
    jobs = variants()
    results: list[Enqueued | InvalidArgument] = [Enqueued(j, created=True) for j in jobs]
    results.insert(3, InvalidArgument.field("jobs[3].queue", "is refused"))

    reply = convert.to_proto_enqueue_batch(results)

    built = [r.job for r in reply.results if not r.HasField("error")]
    assert built == [convert.to_proto_job(j) for j in jobs]
    assert reply.results[3].error.message == "invalid request: jobs[3].queue: is refused"


def test_jobs_that_differ_only_in_id_payload_and_key_each_keep_their_own() -> None:
    jobs = [
        dataclasses.replace(BASE, id=f"01JBASE{i:019d}", payload=b"%d" % i, idempotency_key=k)
        for i, k in enumerate(["k1", None, "k3"])
    ]

    reply = convert.to_proto_enqueue_batch([Enqueued(j, created=False) for j in jobs])

    assert [r.job for r in reply.results] == [convert.to_proto_job(j) for j in jobs]
    assert [r.job.idempotency_key for r in reply.results] == ["k1", "", "k3"]
    assert [r.created for r in reply.results] == [False] * 3


def test_a_lease_reply_holds_each_jobs_own_message_token_and_expiry() -> None:
    jobs = variants()
    grants = [GrantedLease(j, f"token-{i}", 5_000 + i) for i, j in enumerate(jobs)]

    reply = convert.to_proto_leases(grants)

    assert [le.job for le in reply.leases] == [convert.to_proto_job(j) for j in jobs]
    assert [le.lease_token for le in reply.leases] == [g.token for g in grants]
    assert [le.expire_time.ToMilliseconds() for le in reply.leases] == [g.expire_ms for g in grants]


def test_jobs_made_at_different_moments_each_keep_their_own_times() -> None:
    # Jobs enqueued one call each, then leased together: the shared template
    # must not carry one job's creation, next run or start deadline to another.
    from dispatcher.domain.models import JobState

    def made_at(i: int, state: JobState, deadline: bool) -> Job:
        return dataclasses.replace(
            BASE,
            id=f"01JBASE{i:019d}",
            state=state,
            created_ms=1_000 + 7 * i,
            run_at_ms=2_000 + 13 * i,
            start_deadline_ms=9_000 + 1_001 * i if deadline else None,
        )

    jobs = [
        made_at(i, state, deadline)
        for state in (JobState.QUEUED, JobState.LEASED, JobState.SCHEDULED)
        for deadline in (True, False, True)
        for i in range(3)
    ]
    grants = [GrantedLease(j, f"token-{i}", 5_000 + i) for i, j in enumerate(jobs)]

    reply = convert.to_proto_leases(grants)

    assert [le.job for le in reply.leases] == [convert.to_proto_job(j) for j in jobs]
    assert len({le.job.create_time.ToMilliseconds() for le in reply.leases}) == 3


def _basic(j: Job) -> jpb.Job:
    out = jpb.Job()
    convert.fill_basic(out, j)
    return out


def test_a_basic_reply_holds_each_jobs_own_basic_message() -> None:
    """In the BASIC view a message is copied when only the id differs: every
    field change of `variants` (the times and state among them) must show."""
    jobs = variants()

    reply = convert.to_proto_enqueue_batch([Enqueued(j, created=True) for j in jobs], basic=True)

    assert [r.job for r in reply.results] == [_basic(j) for j in jobs]
    assert all(not r.job.payload and not r.job.metadata for r in reply.results)


def test_jobs_of_one_call_in_the_basic_view_differ_in_their_ids_only() -> None:
    jobs = [dataclasses.replace(BASE, id=f"01JBASE{i:019d}", payload=b"%d" % i) for i in range(3)]
    prepared = convert.PreparedBatchReply(basic=True)
    prepared.prepare(jobs)

    reply = prepared.reply([Enqueued(j, created=True) for j in jobs])

    assert [r.job.id for r in reply.results] == [j.id for j in jobs]
    assert [r.job for r in reply.results] == [_basic(j) for j in jobs]
