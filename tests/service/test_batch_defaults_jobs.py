"""Items over EnqueueBatch's defaults: checked for their own fields, made as copies,
and the same jobs as the same items sent in full."""

from __future__ import annotations

from typing import Any

from dispatcher.api import convert
from dispatcher.app import Components
from dispatcher.domain.errors import InvalidArgument
from dispatcher.domain.models import Enqueued, Job, JobSpec, JobState
from tests.api.test_batch_defaults import DEFAULTS
from worker_sdk._proto.dispatch.v1 import job_pb2 as jpb


def _jobs(results: list[Any]) -> list[Job]:
    assert all(isinstance(r, Enqueued) for r in results), results
    return [r.job for r in results]


def _without_id(job: Job) -> dict[str, Any]:
    return {k: v for k, v in vars(job).items() if k != "id"}


async def test_items_over_defaults_make_the_jobs_the_same_items_make_in_full(
    replica: Components,
) -> None:
    items = [jpb.JobSpec(payload=b"%d" % i) for i in range(3)]
    items.append(jpb.JobSpec(payload=b"keyed", idempotency_key="own-key"))
    items.append(jpb.JobSpec(payload=b"own queue", queue="other"))  # not over defaults alone
    base = convert.to_domain_spec(DEFAULTS, "defaults")
    over = convert.to_domain_specs(items, base)
    full = convert.to_domain_specs([_merged(item) for item in items])
    assert [s.from_defaults for s in over if isinstance(s, JobSpec)] == [True] * 4 + [False]

    made = _jobs(await replica.dispatcher.enqueue_batch("", over, defaults=base))
    again = _jobs(await replica.dispatcher.enqueue_batch("", [_rekeyed(s) for s in full]))

    assert [_without_id(j) for j in made[:3]] == [_without_id(j) for j in again[:3]]
    assert _without_id(made[4]) == _without_id(again[4])
    assert made[3].idempotency_key == "own-key" and again[3].idempotency_key == "own-key-2"
    assert {j.state for j in made} == {JobState.SCHEDULED}
    assert len({j.id for j in made + again}) == 10
    assert len({id(j.metadata) for j in made}) == 5  # each job owns its metadata
    stored = await replica.runs.get_many([j.id for j in made])
    assert [stored[j.id].payload for j in made] == [b"0", b"1", b"2", b"keyed", b"own queue"]


async def test_an_item_over_defaults_is_checked_for_its_own_fields(
    replica: Components,
) -> None:
    big = b"x" * (replica.dispatcher.limits.max_payload_bytes + 1)
    items = [
        jpb.JobSpec(payload=b"fine"),
        jpb.JobSpec(payload=big),
        jpb.JobSpec(payload=b"p", idempotency_key="bad\nkey"),
    ]
    base = convert.to_domain_spec(DEFAULTS, "defaults")

    fine, too_big, bad_key = await replica.dispatcher.enqueue_batch(
        "", convert.to_domain_specs(items, base), defaults=base
    )

    assert isinstance(fine, Enqueued)
    assert isinstance(too_big, InvalidArgument)
    assert [v.field for v in too_big.violations] == ["jobs[1].payload"]
    assert isinstance(bad_key, InvalidArgument)
    assert [v.field for v in bad_key.violations] == ["jobs[2].idempotency_key"]


async def test_the_defaults_callback_url_is_vetted_once_for_the_call(
    replica: Components,
) -> None:
    vetted: list[tuple[str, str]] = []

    async def guard(url: str, field: str) -> None:
        vetted.append((url, field))

    replica.dispatcher.url_guard = guard
    defaults = jpb.JobSpec(queue="q", type="t", callback_url="https://example.com/hook")
    base = convert.to_domain_spec(defaults, "defaults")
    items = [jpb.JobSpec(payload=b"%d" % i) for i in range(5)]

    made = _jobs(
        await replica.dispatcher.enqueue_batch(
            "", convert.to_domain_specs(items, base), defaults=base
        )
    )

    assert vetted == [("https://example.com/hook", "defaults.callback_url")]
    assert {j.callback_url for j in made} == {"https://example.com/hook"}


def _merged(item: jpb.JobSpec) -> jpb.JobSpec:
    """The item with the defaults written into it (it sets only scalars)."""
    merged = jpb.JobSpec()
    merged.CopyFrom(DEFAULTS)
    merged.MergeFrom(item)
    return merged


def _rekeyed(spec: JobSpec | InvalidArgument) -> JobSpec | InvalidArgument:
    """The spec with another idempotency key, if it has one: the second batch
    must not be answered with the first batch's keyed job."""
    if isinstance(spec, InvalidArgument) or not spec.idempotency_key:
        return spec
    return JobSpec(**{**vars(spec), "idempotency_key": spec.idempotency_key + "-2"})


async def test_an_item_flagged_over_defaults_without_defaults_is_checked_and_made_in_full(
    replica: Components,
) -> None:
    flagged = [
        JobSpec(queue="", type="t", payload=b"no queue", from_defaults=True),
        JobSpec(queue="a", type="t", payload=b"1", from_defaults=True),
        JobSpec(queue="b", type="u", payload=b"2", from_defaults=True),
    ]

    bad, first, second = await replica.dispatcher.enqueue_batch("", flagged)

    assert isinstance(bad, InvalidArgument)
    assert [v.field for v in bad.violations] == ["jobs[0].queue"]
    made = _jobs([first, second])
    assert [(j.queue, j.type, j.payload) for j in made] == [("a", "t", b"1"), ("b", "u", b"2")]
