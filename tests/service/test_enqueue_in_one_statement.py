"""A group of Enqueue calls without dependencies is first inserted in a write
that commits by itself (`RunStore.insert_committed`: one statement on
PostgreSQL, one transaction on SQLite's driver); only the jobs whose
idempotency keys collided go on to a transaction. The answers must be the same
as the transaction alone gives."""

from __future__ import annotations

import asyncio

from dispatcher.app import Components
from dispatcher.domain.errors import AlreadyExists
from dispatcher.domain.models import Enqueued, JobState, Transition, evolve
from dispatcher.service.dispatch import InsertRequest, _insertable_at_once
from dispatcher.store.sql.runs import _NEWBORN_INSERT, job_values
from dispatcher.store.sql.sqlite_driver import NEWBORN_LITERALS
from dispatcher.store.sql.tables import RUNS_COLUMN_NAMES
from tests.service.helpers import spec


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


async def test_a_plain_new_job_binds_only_the_columns_newborn_jobs_differ_in_on_sqlite(
    replica: Components,
) -> None:
    """`runs._newborn_row` must hold the values the dispatcher gives a new job,
    or every job would take SQLite's insert that binds all 40 columns: correct,
    but slower (`sqlite_driver.NewbornInsert`)."""
    made = (await replica.dispatcher.enqueue("", spec(payload=b"{}"))).job
    stored = await replica.runs.get(made.id)
    assert stored is not None

    ((statement, rows),) = _NEWBORN_INSERT.statements([job_values(stored)])

    assert statement == _NEWBORN_INSERT.statement
    assert len(rows[0]) == len(RUNS_COLUMN_NAMES) - len(NEWBORN_LITERALS)
