"""`Client.enqueue_many` answers with Enqueued values whose job is converted
from the reply when first read: what it reads must be what an eager
conversion gives, converted once, and the value stays read-only."""

from __future__ import annotations

import pytest

from worker_sdk import Enqueued, Job
from worker_sdk._convert import job as convert_job
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2 as pb
from worker_sdk._proto.dispatch.v1 import job_pb2 as jpb
from worker_sdk.client import _enqueue_result

REPLY_JOB = jpb.Job(id="01JENQUEUED000000000000001", queue="q", type="t", payload=b"{}")


def test_an_item_of_a_batch_reply_reads_as_the_job_the_reply_holds() -> None:
    result = _enqueue_result(pb.EnqueueResult(job=REPLY_JOB, created=False))

    assert isinstance(result, Enqueued)
    assert result.created is False
    assert result.job == convert_job(REPLY_JOB)
    assert result == Enqueued(convert_job(REPLY_JOB), created=False)
    assert repr(result) == repr(Enqueued(convert_job(REPLY_JOB), created=False))


def test_the_job_is_converted_once_when_first_read() -> None:
    loads: list[Job] = []

    def load() -> Job:
        loads.append(convert_job(REPLY_JOB))
        return loads[-1]

    result = Enqueued.converted_on_read(load, created=True)
    assert loads == []
    first = result.job
    assert result.job is first
    assert loads == [first]


def test_an_enqueued_value_is_read_only() -> None:
    result = Enqueued(convert_job(REPLY_JOB), created=True)

    with pytest.raises(AttributeError):
        result.created = False
    assert result.created is True
