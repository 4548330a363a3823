"""Proto <-> domain conversion tables are complete and round-trip."""

from __future__ import annotations

import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from dispatcher.api import convert
from dispatcher.domain.errors import InvalidArgument
from dispatcher.domain.models import JobSpec, JobState, Priority, RetryPolicy
from tests.api.test_batch_defaults import DEFAULTS
from worker_sdk._proto.dispatch.v1 import job_pb2 as jpb


def _values(enum: object) -> list[int]:
    return [v.number for v in enum.DESCRIPTOR.values if not v.name.endswith("_UNSPECIFIED")]  # type: ignore[attr-defined]


def test_every_proto_priority_maps_to_a_domain_priority_and_back() -> None:
    for value in _values(jpb.Priority):
        assert convert.PRIORITY_TO_PROTO[convert.PRIORITY_TO_DOMAIN[value]] == value
    assert set(convert.PRIORITY_TO_PROTO) == set(Priority)


def test_unspecified_priority_means_default() -> None:
    assert convert.to_domain_priority(jpb.PRIORITY_UNSPECIFIED, "p") is Priority.DEFAULT


def test_an_unknown_priority_number_is_invalid_argument_naming_the_field() -> None:
    with pytest.raises(InvalidArgument) as info:
        convert.to_domain_priority(77, "job.priority")
    assert info.value.violations[0].field == "job.priority"


def test_every_domain_state_has_a_distinct_proto_state_and_all_proto_states_are_used() -> None:
    assert set(convert.STATE_TO_PROTO) == set(JobState)
    assert sorted(convert.STATE_TO_PROTO.values()) == sorted(_values(jpb.JobState))


def test_an_unset_retry_policy_field_takes_its_default_and_a_zero_jitter_stays_zero() -> None:
    p = convert.to_domain_retry(jpb.RetryPolicy(jitter=0.0))
    assert (p.initial_backoff_ms, p.max_backoff_ms, p.multiplier, p.jitter) == (
        1000,
        300_000,
        2.0,
        0.0,
    )


def test_a_huge_duration_is_clamped_so_validation_can_refuse_it() -> None:
    spec = convert.to_domain_spec(
        jpb.JobSpec(queue="q", type="t", delay=duration_pb2.Duration(seconds=10**12))
    )
    assert spec.delay_ms is not None and spec.delay_ms > 365 * 24 * 3600 * 1000


def test_every_terminal_reason_maps_to_a_distinct_proto_value() -> None:
    from dispatcher.domain.models import TerminalReason

    assert set(convert.REASON_TO_PROTO) == set(TerminalReason)
    assert sorted(convert.REASON_TO_PROTO.values()) == sorted(
        v.number for v in jpb.TerminalReason.DESCRIPTOR.values
    )


def test_a_spec_with_only_queue_and_type_converts_to_the_domain_defaults() -> None:
    from dispatcher.domain.models import JobSpec

    assert convert.to_domain_spec(jpb.JobSpec(queue="q", type="t")) == JobSpec(queue="q", type="t")


def test_a_spec_with_maps_lists_and_durations_set_converts_each_of_them() -> None:
    spec = convert.to_domain_spec(
        jpb.JobSpec(
            queue="q",
            type="t",
            metadata={"team": "a"},
            depends_on=["01JDEP0000000000000000001"],
            lease_duration=duration_pb2.Duration(seconds=2, nanos=500_000_000),
        )
    )
    assert (spec.metadata, spec.depends_on, spec.lease_duration_ms) == (
        {"team": "a"},
        ["01JDEP0000000000000000001"],
        2_500,
    )


def test_every_job_spec_field_of_the_proto_has_a_conversion_to_a_domain_field() -> None:
    numbers = {f.number for f in jpb.JobSpec.DESCRIPTOR.fields}
    assert set(convert._SPEC_FIELDS) == numbers
    names = {name for name, _ in convert._SPEC_FIELDS.values()}
    assert names == set(JobSpec.__dataclass_fields__) - {"from_defaults"}


def test_a_spec_with_every_field_set_converts_each_of_them() -> None:
    spec = convert.to_domain_spec(
        jpb.JobSpec(
            queue="q",
            type="t",
            payload=b"{}",
            content_type="application/json",
            priority=jpb.PRIORITY_HIGH,
            metadata={"team": "a"},
            max_attempts=4,
            retry_policy=jpb.RetryPolicy(multiplier=3.0),
            lease_duration=duration_pb2.Duration(seconds=30),
            run_at=timestamp_pb2.Timestamp(seconds=1_700_000_000, nanos=5_000_000),
            idempotency_key="k",
            callback_url="https://example.com/done",
            start_within=duration_pb2.Duration(seconds=60),
            max_run_time=duration_pb2.Duration(seconds=120),
            depends_on=["01JDEP0000000000000000001"],
            concurrency_key="c",
        )
    )
    assert spec == JobSpec(
        queue="q",
        type="t",
        payload=b"{}",
        content_type="application/json",
        priority=Priority.HIGH,
        metadata={"team": "a"},
        max_attempts=4,
        retry_policy=RetryPolicy(multiplier=3.0),
        lease_duration_ms=30_000,
        run_at_ms=1_700_000_000_005,
        idempotency_key="k",
        callback_url="https://example.com/done",
        start_within_ms=60_000,
        max_run_ms=120_000,
        depends_on=["01JDEP0000000000000000001"],
        concurrency_key="c",
    )
    delayed = convert.to_domain_spec(
        jpb.JobSpec(queue="q", type="t", delay=duration_pb2.Duration(seconds=5))
    )
    assert (delayed.delay_ms, delayed.run_at_ms) == (5_000, None)


def test_converted_specs_share_no_metadata_or_dependency_list() -> None:
    a, b = convert.to_domain_specs([jpb.JobSpec(queue="q", type="t")] * 2)
    assert isinstance(a, JobSpec) and isinstance(b, JobSpec)
    assert a.metadata is not b.metadata and a.depends_on is not b.depends_on


def test_a_batch_item_with_an_unknown_priority_fails_alone_naming_its_field() -> None:
    good = jpb.JobSpec(queue="q", type="t")
    bad = jpb.JobSpec(queue="q", type="t", priority=77)  # type: ignore[arg-type]
    out = convert.to_domain_specs([good, bad])
    assert out[0] == JobSpec(queue="q", type="t")
    assert isinstance(out[1], InvalidArgument)
    assert out[1].violations[0].field == "jobs[1].priority"
    with pytest.raises(InvalidArgument) as info:
        convert.to_domain_spec(bad, "job")
    assert info.value.violations[0].field == "job.priority"


def _replaced(defaults: jpb.JobSpec, item: jpb.JobSpec) -> jpb.JobSpec:
    """The item as it would be sent in full: each field it sets replaces the default's whole."""
    merged = jpb.JobSpec()
    merged.CopyFrom(defaults)
    for fd, value in item.ListFields():
        if fd.name in ("run_at", "delay"):
            merged.ClearField("start")
        merged.ClearField(fd.name)  # type: ignore[arg-type]  # a name ListFields gave
        if fd.name == "metadata":
            merged.metadata.update(value)
        elif fd.name == "depends_on":
            merged.depends_on.extend(value)
        elif fd.message_type is not None:
            getattr(merged, fd.name).CopyFrom(value)
        else:
            setattr(merged, fd.name, value)
    return merged


def test_items_over_defaults_convert_as_if_each_had_set_every_field_itself() -> None:
    defaults = jpb.JobSpec()
    defaults.CopyFrom(DEFAULTS)
    defaults.depends_on.append("01JDEP0000000000000000001")
    items = [
        jpb.JobSpec(payload=b"only"),
        jpb.JobSpec(payload=b"k", idempotency_key="key"),
        jpb.JobSpec(queue="other", priority=jpb.PRIORITY_LOW, max_attempts=9),
        jpb.JobSpec(metadata={"tenant": "b"}, depends_on=["01JDEP0000000000000000002"]),
        jpb.JobSpec(run_at=timestamp_pb2.Timestamp(seconds=2_000_000_000)),  # the oneof
        jpb.JobSpec(retry_policy=jpb.RetryPolicy(jitter=0.5)),  # the message as a whole
    ]
    base = convert.to_domain_spec(defaults, "defaults")

    over = convert.to_domain_specs(items, base)

    assert over == [convert.to_domain_spec(_replaced(defaults, item)) for item in items]
    first, _, _, own, timed, retried = over
    assert isinstance(first, JobSpec) and (first.queue, first.payload) == ("q", b"only")
    assert isinstance(own, JobSpec) and own.metadata == {"tenant": "b"}
    assert isinstance(timed, JobSpec) and (timed.delay_ms, timed.run_at_ms) == (None, 2e12)
    assert isinstance(retried, JobSpec) and retried.retry_policy is not None
    assert retried.retry_policy.multiplier == RetryPolicy().multiplier  # not the default's 3.0
    # Every spec owns its metadata dict and dependency list.
    specs = [s for s in over if isinstance(s, JobSpec)]
    assert len({id(s.metadata) for s in specs} | {id(base.metadata)}) == len(specs) + 1
    assert len({id(s.depends_on) for s in specs} | {id(base.depends_on)}) == len(specs) + 1


def test_an_item_over_defaults_with_an_unknown_priority_fails_alone_naming_its_field() -> None:
    base = convert.to_domain_spec(jpb.JobSpec(queue="q", type="t"), "defaults")
    bad = jpb.JobSpec(priority=77)  # type: ignore[arg-type]

    good, refused = convert.to_domain_specs([jpb.JobSpec(payload=b"p"), bad], base)

    assert isinstance(good, JobSpec) and good.payload == b"p"
    assert isinstance(refused, InvalidArgument)
    assert refused.violations[0].field == "jobs[1].priority"
