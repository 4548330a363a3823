"""`construct` builds the same frozen dataclass as its __init__, without calling it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from dispatcher.domain.ids import JobIdGenerator
from dispatcher.domain.limits import Limits
from dispatcher.domain.models import (
    Job,
    JobSpec,
    JobState,
    Priority,
    RetryPolicy,
    construct,
    constructor,
)
from dispatcher.service.dispatch import Dispatcher

REQUIRED: dict[str, Any] = {
    "id": "01M83HEKD3AA16Q5HS2VATHPWR",
    "namespace": "ns",
    "queue": "q",
    "type": "t",
    "payload": b"p",
    "content_type": "text/plain",
    "priority": Priority.HIGH,
    "metadata": {"a": "b"},
    "state": JobState.QUEUED,
    "attempt": 0,
    "max_attempts": 3,
    "retry_policy": RetryPolicy(),
    "lease_duration_ms": 30_000,
    "created_ms": 1,
    "run_at_ms": 2,
}


def test_a_constructed_job_equals_the_one_init_makes_defaults_included() -> None:
    built = construct(Job, **REQUIRED, concurrency_key="k")
    assert built == Job(**REQUIRED, concurrency_key="k")
    assert built.version == 1 and built.lease_expires_ms is None and built.depends_on == []


def test_each_constructed_object_gets_its_own_default_containers() -> None:
    a, b = construct(JobSpec, queue="q", type="t"), construct(JobSpec, queue="q", type="t")
    assert a == JobSpec("q", "t")
    assert a.metadata is not b.metadata and a.depends_on is not b.depends_on


def test_a_constructed_object_is_as_frozen_as_one_from_init() -> None:
    spec = construct(JobSpec, queue="q", type="t")
    with pytest.raises(AttributeError):
        spec.queue = "other"  # type: ignore[misc]


def test_an_unknown_or_missing_field_raises_type_error_as_init_does() -> None:
    with pytest.raises(TypeError, match="unknown JobSpec fields: \\['colour'\\]"):
        construct(JobSpec, queue="q", type="t", colour="red")
    with pytest.raises(TypeError, match="missing JobSpec fields: \\['type'\\]"):
        construct(JobSpec, queue="q")


def test_a_class_whose_init_does_more_than_assign_is_refused() -> None:
    @dataclass(frozen=True)
    class Checked:
        n: int
        seen: list[int] = field(default_factory=list)

        def __post_init__(self) -> None:
            if self.n < 0:
                raise ValueError("negative")

    with pytest.raises(TypeError, match="cannot be built without its __init__"):
        construct(Checked, n=1)


# The required fields and those with a default factory: the least a constructor takes.
GIVEN = [*REQUIRED, "trace_context", "depends_on"]


def test_a_constructor_makes_what_init_makes_from_the_fields_it_was_given() -> None:
    make = constructor(Job, [*GIVEN, "concurrency_key"])
    values = {**REQUIRED, "trace_context": {}, "depends_on": [], "concurrency_key": "k"}
    built = make(values)
    assert built == Job(**values)
    assert vars(built).keys() == Job.__dataclass_fields__.keys()


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ([*GIVEN, "nope"], "unknown Job fields"),
        ([f for f in GIVEN if f != "queue"], "missing Job fields"),
        (list(REQUIRED), "default factory"),  # trace_context and depends_on left out
    ],
)
def test_a_constructor_refuses_fields_it_cannot_fill(given: list[str], says: str) -> None:
    with pytest.raises(TypeError, match=says):
        constructor(Job, given)


def test_a_new_job_is_the_job_construct_makes_from_the_same_values() -> None:
    d = Dispatcher.__new__(Dispatcher)
    d.limits, d.id_gen = Limits(), JobIdGenerator()
    spec = construct(
        JobSpec, queue="q", type="t", payload=b"p", metadata={"a": "b"}, idempotency_key="k",
        callback_url="https://example.com/h", start_within_ms=5_000, max_run_ms=9_000,
        depends_on=["01M83HEKD3AA16Q5HS2VATHPWR"], concurrency_key="c",
    )  # fmt: skip
    job = d._new_job("ns", spec, run_at=20, now=10, trace_context={"traceparent": "x"})
    expected = construct(
        Job, id=job.id, namespace="ns", queue="q", type="t", payload=b"p", content_type="",
        priority=spec.priority, metadata={"a": "b"}, state=JobState.SCHEDULED, attempt=0,
        max_attempts=Limits().default_max_attempts, retry_policy=RetryPolicy(),
        lease_duration_ms=Limits().default_lease_ms, created_ms=10, run_at_ms=20,
        idempotency_key="k", trace_context={"traceparent": "x"},
        callback_url="https://example.com/h", concurrency_key="c", start_deadline_ms=5_020,
        max_run_ms=9_000, depends_on=["01M83HEKD3AA16Q5HS2VATHPWR"],
    )  # fmt: skip
    assert job == expected
    assert vars(job).keys() == Job.__dataclass_fields__.keys()
    again = d._new_job("ns", spec, run_at=20, now=10, trace_context={})
    assert again.depends_on is not job.depends_on and again.metadata is not job.metadata
