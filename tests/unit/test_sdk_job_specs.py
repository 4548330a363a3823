"""A batch's specs are made from a template where requests share their shape,
and each is the spec `job_spec` would make on its own."""

from __future__ import annotations

from datetime import timedelta

from worker_sdk import Backoff, JobOptions, JobRequest, Priority
from worker_sdk._convert import JobSpecs, job_spec
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2 as pb


def test_every_spec_of_a_batch_is_what_job_spec_makes_alone() -> None:
    plain = JobOptions()
    rich = JobOptions(
        priority=Priority.HIGH,
        metadata={"tenant": "a"},
        max_attempts=5,
        backoff=Backoff(initial=timedelta(seconds=2), multiplier=3.0),
        lease_duration=timedelta(seconds=45),
        delay=timedelta(minutes=1),
        callback_url="https://example.com/hook",
        concurrency_key="k",
        content_type="text/plain",
    )
    requests = [
        JobRequest("q", "t", b"one", plain),
        JobRequest("q", "t", b"two", plain),  # the same shape: copied from the template
        JobRequest("q", "t", {"as": "json"}, plain),  # JSON: another content type
        JobRequest("q", "t", {"as": "json too"}, plain),
        JobRequest("q", "other", b"three", plain),  # another type
        JobRequest("q2", "other", b"four", plain),  # another queue
        JobRequest("q2", "other", b"five", rich),  # other options
        JobRequest("q2", "other", b"six", rich),
        JobRequest("q2", "other", b"seven", JobOptions()),  # equal options, another object
        JobRequest("q2", "other", b"eight", plain),  # back to the first options
    ]
    specs = JobSpecs()
    batch = pb.EnqueueBatchRequest()

    for i, r in enumerate(requests):
        specs.fill(batch.jobs.add(), r, f"key-{i}")

    made = list(batch.jobs)

    assert made == [job_spec(r, f"key-{i}") for i, r in enumerate(requests)]
    assert [s.payload for s in made[:2]] == [b"one", b"two"]
    assert made[2].content_type == "application/json" and made[0].content_type == ""
    assert made[6].retry_policy.initial_backoff.seconds == 2 and made[7].delay.seconds == 60
