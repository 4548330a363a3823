"""A batch's jobs share their shape as the request's defaults while they can,
are made from a template where they share it after that, and each is, over the
defaults, the spec `job_spec` would make on its own."""

from __future__ import annotations

from datetime import timedelta

from worker_sdk import Backoff, JobOptions, JobRequest, Priority
from worker_sdk._convert import JobSpecs, job_spec, over_defaults
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2 as pb
from worker_sdk._proto.dispatch.v1 import job_pb2 as jpb

RICH = JobOptions(
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


def _batch_of(requests: list[JobRequest], keys: list[str]) -> tuple[pb.EnqueueBatchRequest, int]:
    batch = pb.EnqueueBatchRequest()
    specs = JobSpecs(batch)
    for r, key in zip(requests, keys, strict=True):
        specs.add(r, key)
    return batch, specs.size


def _made(batch: pb.EnqueueBatchRequest) -> list[jpb.JobSpec]:
    """Each job as the server makes it: over the defaults, if the batch has them."""
    if not batch.HasField("defaults"):
        return list(batch.jobs)
    return [over_defaults(batch.defaults, job) for job in batch.jobs]


def test_jobs_of_one_shape_send_it_once_as_the_defaults_and_carry_only_payload_and_key() -> None:
    requests = [JobRequest("q", "t", b"%d" % i, RICH) for i in range(3)]
    keys = ["", "k1", ""]

    batch, _ = _batch_of(requests, keys)

    assert batch.defaults == _without_payload(job_spec(requests[0], ""))
    assert [(job.payload, job.idempotency_key) for job in batch.jobs] == [
        (b"0", ""),
        (b"1", "k1"),
        (b"2", ""),
    ]
    assert [len(job.ListFields()) for job in batch.jobs] == [1, 2, 1]
    assert _made(batch) == [job_spec(r, k) for r, k in zip(requests, keys, strict=True)]


def test_a_job_of_another_shape_writes_the_shape_into_the_jobs_before_it() -> None:
    plain = JobOptions()
    requests = [
        JobRequest("q", "t", b"one", plain),
        JobRequest("q", "t", b"two", plain),  # the same shape: over the defaults
        JobRequest("q", "t", {"as": "json"}, plain),  # JSON: another content type
        JobRequest("q", "t", {"as": "json too"}, plain),
        JobRequest("q", "other", b"three", plain),  # another type
        JobRequest("q2", "other", b"four", plain),  # another queue
        JobRequest("q2", "other", b"five", RICH),  # other options
        JobRequest("q2", "other", b"six", RICH),
        JobRequest("q2", "other", b"seven", JobOptions()),  # equal options, another object
        JobRequest("q2", "other", b"eight", plain),  # back to the first options
    ]
    keys = [f"key-{i}" for i in range(len(requests))]

    batch, _ = _batch_of(requests, keys)

    assert not batch.HasField("defaults")
    made = list(batch.jobs)
    assert made == [job_spec(r, k) for r, k in zip(requests, keys, strict=True)]
    assert [s.payload for s in made[:2]] == [b"one", b"two"]
    assert made[2].content_type == "application/json" and made[0].content_type == ""
    assert made[6].retry_policy.initial_backoff.seconds == 2 and made[7].delay.seconds == 60


def test_a_job_without_a_key_after_a_keyed_one_has_no_key() -> None:
    options = JobOptions()
    keys = ["first", "", "third", ""]
    for tail in ([], [JobRequest("q", "other", b"x", options)]):  # over defaults, then in full
        requests = [JobRequest("q", "t", b"%d" % i, options) for i in range(4)] + tail
        all_keys = keys + [""] * len(tail)

        batch, _ = _batch_of(requests, all_keys)

        assert batch.HasField("defaults") == (not tail)
        assert [s.idempotency_key for s in _made(batch)] == all_keys
        assert _made(batch) == [job_spec(r, k) for r, k in zip(requests, all_keys, strict=True)]


def test_the_size_counted_is_the_defaults_and_the_jobs_encoded_sizes() -> None:
    """Sizes are counted, not encoded: payloads and keys across the varint
    length boundaries, empty ones (not encoded at all), over the defaults and
    in full, where a template's own payload and key differ in size from the
    copies'."""
    options = JobOptions(metadata={"tenant": "a"}, max_attempts=5)
    lengths = [40, 0, 1, 127, 128, 16_383, 16_384, 300_000, 2_097_152]
    keys = ["k", "", "k" * 127, "k" * 128, "é" * 70]  # a multi-byte key: its encoded length
    for shapes in ([options], [options, JobOptions()]):  # one shape: defaults; two: in full
        batch = pb.EnqueueBatchRequest()
        specs = JobSpecs(batch)
        sizes = []
        for i, n in enumerate(lengths):
            for key in keys:
                specs.add(JobRequest("q", "t", b"x" * n, shapes[i % 4 % len(shapes)]), key)
                defaults = batch.defaults.ByteSize() if batch.HasField("defaults") else 0
                sizes.append((specs.size, defaults + sum(j.ByteSize() for j in batch.jobs)))

        assert batch.HasField("defaults") == (len(shapes) == 1)
        assert all(counted == encoded for counted, encoded in sizes)
        assert len(sizes) == len(lengths) * len(keys)


def _without_payload(spec: jpb.JobSpec) -> jpb.JobSpec:
    spec.ClearField("payload")
    return spec
