"""EnqueueBatch prepares its answer while the insert commits: `enqueue_batch`
gives the new jobs to `while_inserting` once the insert has gone out, and
answers with those same jobs unless something changed them (a taken key, a
refused item); the servicer's `PreparedBatchReply` then uses the messages it
built meanwhile. The answer must be the one built after the commit."""

from __future__ import annotations

import asyncio
import logging

import pytest

from dispatcher.api import convert
from dispatcher.app import Components
from dispatcher.domain.errors import InvalidArgument
from dispatcher.domain.models import Enqueued, Job, JobSpec
from dispatcher.store.sql import pg_driver, sqlite_driver
from tests.service.helpers import lease, parked, spec
from worker_sdk._proto.dispatch.v1 import job_pb2 as jpb


async def test_the_jobs_given_while_inserting_are_the_jobs_answered_and_committed(
    replica: Components,
) -> None:
    given: list[list[Job]] = []
    specs = [spec(payload=b"a"), spec(payload=b"b", idempotency_key=None)]

    results = await replica.dispatcher.enqueue_batch("", specs, while_inserting=given.append)

    (jobs,) = given
    assert [r.job for r in results if isinstance(r, Enqueued)] == jobs
    assert all(isinstance(r, Enqueued) and r.job is j for r, j in zip(results, jobs, strict=True))
    for j in jobs:
        assert await replica.runs.get(j.id) == j


async def test_on_postgresql_the_jobs_are_given_while_the_insert_runs_on_sqlite_after_it(
    replica: Components, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    real_fetch, real_insert = pg_driver.fetch, sqlite_driver.insert_runs

    async def fetch(*args: object) -> object:
        seen.append("insert sent")
        out = await real_fetch(*args)  # type: ignore[arg-type]
        seen.append("insert done")
        return out

    async def insert_runs(*args: object) -> object:
        seen.append("insert sent")
        out = await real_insert(*args)  # type: ignore[arg-type]
        seen.append("insert done")
        return out

    monkeypatch.setattr(pg_driver, "fetch", fetch)
    monkeypatch.setattr(sqlite_driver, "insert_runs", insert_runs)

    await replica.dispatcher.enqueue_batch(
        "", [spec(), spec()], while_inserting=lambda jobs: seen.append("jobs given")
    )

    if replica.runs.commits_in_another_process:  # PostgreSQL
        assert seen == ["insert sent", "jobs given", "insert done"]
    else:  # SQLite: its work beside ours would wait for the interpreter lock
        assert seen == ["insert sent", "insert done", "jobs given"]


async def test_a_failing_preparation_still_commits_and_answers(
    replica: Components, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(jobs: list[Job]) -> None:
        raise RuntimeError("bug in preparing the answer")

    with caplog.at_level(logging.ERROR):
        results = await replica.dispatcher.enqueue_batch("", [spec()], while_inserting=broken)

    (out,) = results
    assert isinstance(out, Enqueued) and out.created
    assert await replica.runs.get(out.job.id) == out.job
    assert "work done while inserting failed" in caplog.text


async def test_a_prepared_reply_equals_the_reply_built_after_the_commit(
    replica: Components,
) -> None:
    prepared = convert.PreparedBatchReply()
    specs = [spec(payload=bytes([i]), idempotency_key=f"p{i}") for i in range(5)]

    results = await replica.dispatcher.enqueue_batch("", specs, while_inserting=prepared.prepare)

    assert prepared.reply(results) == convert.to_proto_enqueue_batch(results)


async def test_a_taken_key_or_a_refused_item_is_answered_from_the_results(
    replica: Components,
) -> None:
    first = await replica.dispatcher.enqueue("", spec(idempotency_key="taken", payload=b"x"))
    batches: list[list[JobSpec | InvalidArgument]] = [
        [spec(idempotency_key="taken", payload=b"x"), spec(idempotency_key="fresh")],
        [spec(), InvalidArgument.field("jobs[1].queue", "must not be empty")],
    ]
    for specs in batches:
        prepared = convert.PreparedBatchReply()

        results = await replica.dispatcher.enqueue_batch(
            "", specs, while_inserting=prepared.prepare
        )

        reply = prepared.reply(results)
        assert reply == convert.to_proto_enqueue_batch(results)
        assert len(reply.results) == 2
    taken = convert.to_proto_enqueue_batch(
        await replica.dispatcher.enqueue_batch("", [spec(idempotency_key="taken", payload=b"x")])
    )
    assert taken.results[0].job.id == first.job.id
    assert not taken.results[0].created


async def test_a_job_handed_to_a_waiting_lease_is_prepared_and_answered_leased(
    replica: Components,
) -> None:
    poll = asyncio.create_task(lease(replica, wait_ms=60_000))
    await parked(replica)
    prepared = convert.PreparedBatchReply()

    results = await replica.dispatcher.enqueue_batch(
        "", [spec(payload=b"hi")], while_inserting=prepared.prepare
    )

    (granted,) = await asyncio.wait_for(poll, timeout=30)
    reply = prepared.reply(results)
    assert reply == convert.to_proto_enqueue_batch(results)
    assert reply.results[0].job.id == granted.job.id
    assert reply.results[0].job.state == jpb.JOB_STATE_LEASED
