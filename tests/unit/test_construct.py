"""`construct` builds the same frozen dataclass as its __init__, without calling it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from dispatcher.domain.models import Job, JobSpec, JobState, Priority, RetryPolicy, construct

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
