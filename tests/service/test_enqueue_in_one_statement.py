"""A group of Enqueue calls without dependencies is first inserted in a write
that commits by itself (`RunStore.insert_committed`: one statement on
PostgreSQL, one transaction on SQLite's driver); only the jobs whose
idempotency keys collided go on to a transaction. The answers must be the same
as the transaction alone gives."""

from __future__ import annotations

import asyncio
import dataclasses

from dispatcher.app import Components
from dispatcher.domain.errors import AlreadyExists
from dispatcher.domain.ids import JobIdGenerator
from dispatcher.domain.models import Enqueued, Job, JobState, Transition, evolve
from dispatcher.service.dispatch import InsertRequest, _insertable_at_once
from dispatcher.store.sql.newborn import NEWBORN_COLUMNS, NEWBORN_LITERALS
from dispatcher.store.sql.runs import NEWBORN, job_to_row, job_values, row_to_job
from tests.service.helpers import spec, stored_job
from tests.unit.test_runs_rows import job_with_every_field_distinct

NOW = 1_700_000_000_000
_ids = JobIdGenerator()


def _request(*specs: object) -> InsertRequest:
    valid = [(i, s, 0) for i, s in enumerate(specs)]
    return InsertRequest("default", valid, 0, [None] * len(specs), False, {})  # type: ignore[arg-type]


def test_a_group_is_inserted_at_once_only_with_keys_on_all_jobs_or_none_and_no_dependencies() -> (
    None
):
    keyed, plain = spec(idempotency_key="a"), spec()
    assert _insertable_at_once([_request(keyed), _request(spec(idempotency_key="b"))])
    assert _insertable_at_once([_request(plain, spec())])
    assert _insertable_at_once([])
    assert not _insertable_at_once([_request(keyed), _request(plain)])
    assert not _insertable_at_once(
        [_request(plain, spec(depends_on=["01J0000000000000000000000A"]))]
    )


async def test_insert_committed_writes_jobs_and_first_events_and_skips_a_taken_key(
    replica: Components,
) -> None:
    holder = (await replica.dispatcher.enqueue("", spec(idempotency_key="taken"))).job
    new_one = evolve(holder, id="01J00000000000000000000NEW", idempotency_key="other")
    clash = evolve(holder, id="01J0000000000000000000CLSH")  # the same key as `holder`

    inserted = await replica.runs.insert_committed([new_one, clash])

    assert inserted == {new_one.id}
    assert await replica.runs.get(new_one.id) == new_one
    assert await replica.runs.get(clash.id) is None
    assert await replica.runs.events_after({new_one.id: 0}) == [
        Transition(new_one.id, 1, JobState.QUEUED, 0, new_one.created_ms, "")
    ]


async def test_concurrent_enqueues_sharing_keys_get_one_job_per_key_and_a_clash_is_refused(
    replica: Components,
) -> None:
    d = replica.dispatcher
    calls = [d.enqueue("", spec(idempotency_key=f"k{i % 5}", payload=b"same")) for i in range(20)]
    calls.append(d.enqueue("", spec(idempotency_key="k0", payload=b"another")))

    results = await asyncio.gather(*calls, return_exceptions=True)

    answers = [r for r in results[:20] if isinstance(r, Enqueued)]
    assert len(answers) == 20
    by_key: dict[str, set[str]] = {}
    for a in answers:
        assert a.job.idempotency_key is not None
        by_key.setdefault(a.job.idempotency_key, set()).add(a.job.id)
    assert {k: len(v) for k, v in by_key.items()} == {f"k{i}": 1 for i in range(5)}
    assert sum(a.created for a in answers) == 5
    assert isinstance(results[20], AlreadyExists)
    for job_ids in by_key.values():
        (job_id,) = job_ids
        job = await replica.runs.get(job_id)
        assert job is not None and job.payload == b"same"


async def test_a_plain_new_job_is_inserted_without_the_columns_newborn_jobs_share(
    replica: Components,
) -> None:
    """`runs._newborn_row` must hold the values the dispatcher gives a new job,
    or every job would take the insert that sends all 40 columns: correct, but
    slower (store/sql/newborn.py)."""
    made = (await replica.dispatcher.enqueue("", spec(payload=b"{}"))).job
    stored = await replica.runs.get(made.id)
    assert stored is not None

    assert NEWBORN(job_values(stored))
    assert len(NEWBORN.bound(job_values(stored))) == len(NEWBORN_COLUMNS)


def _unlike_a_newborn(column: str) -> Job:
    """A new job whose `column`, one of `newborn.NEWBORN_LITERALS`, holds a
    value no newborn job has (the sample job's, whose values all differ)."""
    sample = dataclasses.replace(job_with_every_field_distinct(), has_dependents=True)
    row = job_to_row(_newborn())
    row[column] = job_to_row(sample)[column]
    return row_to_job(list(row.values()))


def _newborn() -> Job:
    return stored_job(_ids.new(NOW), created_ms=NOW, run_at_ms=NOW)


async def test_new_jobs_read_back_as_inserted_whether_newborn_or_not(
    replica: Components,
) -> None:
    """Newborn jobs' rows go without the columns they share, as one statement on
    PostgreSQL when all are newborn and by runs of each kind on SQLite; any other
    value in one of those columns takes the insert that sends them all."""
    unlike = [_unlike_a_newborn(c) for c in NEWBORN_LITERALS]
    newborn = [_newborn() for _ in range(3)]
    mixed = [j for u in [_unlike_a_newborn(c) for c in NEWBORN_LITERALS] for j in (_newborn(), u)]
    assert not any(NEWBORN(job_values(j)) for j in unlike)

    for jobs in (newborn, unlike, mixed):
        assert await replica.runs.insert_committed(jobs) == {j.id for j in jobs}
        assert await replica.runs.get_many([j.id for j in jobs]) == {j.id: j for j in jobs}
