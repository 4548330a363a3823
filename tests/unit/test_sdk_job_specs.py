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


def test_a_copy_without_a_key_after_a_keyed_template_has_no_key() -> None:
    options = JobOptions()
    requests = [JobRequest("q", "t", b"%d" % i, options) for i in range(4)]
    keys = ["first", "", "third", ""]
    specs = JobSpecs()
    batch = pb.EnqueueBatchRequest()

    for r, key in zip(requests, keys, strict=True):
        specs.fill(batch.jobs.add(), r, key)

    assert [s.idempotency_key for s in batch.jobs] == keys
    assert list(batch.jobs) == [job_spec(r, k) for r, k in zip(requests, keys, strict=True)]


def test_the_size_fill_returns_is_each_specs_encoded_size() -> None:
    """A copied spec's size is counted, not encoded: payloads and keys across
    the varint length boundaries, empty ones (not encoded at all), and a
    template whose own payload and key differ in size from the copies'."""
    options = JobOptions(metadata={"tenant": "a"}, max_attempts=5)
    lengths = [40, 0, 1, 127, 128, 16_383, 16_384, 300_000, 2_097_152]
    keys = ["k", "", "k" * 127, "k" * 128, "é" * 70]  # a multi-byte key: its encoded length
    specs = JobSpecs()
    batch = pb.EnqueueBatchRequest()

    sizes = []
    for i, n in enumerate(lengths):
        for key in keys:
            request = JobRequest("q", "t", b"x" * n, options if i % 4 else JobOptions())
            spec = batch.jobs.add()
            sizes.append((specs.fill(spec, request, key), spec.ByteSize()))

    assert all(counted == encoded for counted, encoded in sizes)
    assert len(sizes) == len(lengths) * len(keys)
