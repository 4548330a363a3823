"""The SDK's public surface is pinned, and its enums map to every proto value and back."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Mapping
from enum import Enum
from typing import Any

import pytest
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

import worker_sdk
from worker_sdk import _convert
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2 as pb
from worker_sdk._proto.dispatch.v1 import job_pb2 as jpb

EXPECTED = {
    "AlreadyExists", "Backoff", "Client", "ConnectOptions", "DeadlineExceeded",
    "DispatcherError", "Enqueued", "FailedPrecondition", "InvalidArgument", "Job",
    "JobContext", "JobFailed", "JobOptions", "JobRequest", "JobState", "JobUpdate",
    "JobView", "LoopUnavailable", "MisfirePolicy", "Schedule",
    "NonRetryable", "NotFound", "PermissionDenied", "Priority", "Progress", "QueueLimits",
    "ResourceExhausted", "Retry", "RetryOptions", "SyncClient", "TerminalReason",
    "Unauthenticated", "Unavailable", "Worker", "WorkerOptions", "tune_for_service",
}  # fmt: skip


def test_the_public_api_is_exactly_the_pinned_names() -> None:
    assert set(worker_sdk.__all__) == EXPECTED
    assert all(hasattr(worker_sdk, name) for name in EXPECTED)


def _public_signatures() -> list[tuple[str, str]]:
    out = []
    for name in worker_sdk.__all__:
        obj = getattr(worker_sdk, name)
        members = [obj] + [
            m for n, m in inspect.getmembers(obj) if not n.startswith("_") and callable(m)
        ]
        for m in members:
            try:
                hints = typing.get_type_hints(m)
            except TypeError:
                continue
            out += [(f"{name}.{getattr(m, '__name__', '?')}", repr(h)) for h in hints.values()]
    return out


def test_no_public_signature_takes_or_returns_a_generated_type() -> None:
    leaks = [(where, hint) for where, hint in _public_signatures() if "_pb2" in hint]
    # Client.raw is the one, deliberate, escape hatch: a property, so not in this list.
    assert leaks == []
    assert len(_public_signatures()) > 50  # the walk did look at the API


@pytest.mark.parametrize(
    ("table", "enum"),
    [
        (_convert.PRIORITY_FROM_PROTO, jpb.Priority),
        (_convert.STATE_FROM_PROTO, jpb.JobState),
        (_convert.REASON_FROM_PROTO, jpb.TerminalReason),
    ],
)
def test_every_proto_enum_value_maps_to_an_sdk_value_and_back(
    table: dict[int, Any], enum: EnumTypeWrapper
) -> None:
    values = set(enum.values())
    unspecified = {v for v in values if enum.Name(v).endswith("_UNSPECIFIED")}
    assert values - unspecified <= set(table)
    to_proto: dict[int, Mapping[Any, int]] = {
        id(_convert.PRIORITY_FROM_PROTO): _convert.PRIORITY_TO_PROTO,
        id(_convert.STATE_FROM_PROTO): _convert.STATE_TO_PROTO,
        id(_convert.REASON_FROM_PROTO): _convert.REASON_TO_PROTO,
    }
    back = to_proto[id(table)]
    for value in values - unspecified:
        assert back[table[value]] == value
    members: type[Enum] = type(next(iter(back)))
    assert set(back) == set(members)  # every SDK member is mapped


def test_every_sdk_view_maps_to_a_proto_view_and_basic_is_asked_for_by_name() -> None:
    assert set(_convert.VIEW_TO_PROTO) == set(worker_sdk.JobView)
    assert _convert.VIEW_TO_PROTO[worker_sdk.JobView.BASIC] == pb.JOB_VIEW_BASIC
    full = _convert.VIEW_TO_PROTO[worker_sdk.JobView.FULL]
    assert full in (pb.JOB_VIEW_UNSPECIFIED, pb.JOB_VIEW_FULL)
