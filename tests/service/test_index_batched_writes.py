"""The index scripts write many jobs with a few variadic calls (`place.lua`,
`remove.lua`, `enqueue.lua`, `hand_off.lua`, `extend.lua`, and `lease.lua` for a
queue without concurrency keys) instead of a call per job. They must still leave every job where one
call per job would have: past the size of one variadic call, with an id named
twice in one write, and with jobs that carry a concurrency key among them."""

from __future__ import annotations

from dispatcher.app import Components
from dispatcher.domain.models import Enqueued, Job, evolve
from tests.service.helpers import lease, spec


async def _enqueued(
    replica: Components, n: int, delay_ms: int | None = None, concurrency_key: str = ""
) -> list[Job]:
    jobs: list[Job] = []
    while len(jobs) < n:
        batch = [
            spec(delay_ms=delay_ms, concurrency_key=concurrency_key)
            for _ in range(min(1000, n - len(jobs)))
        ]
        for outcome in await replica.dispatcher.enqueue_batch("", batch):
            assert isinstance(outcome, Enqueued)
            jobs.append(outcome.job)
    await replica.index_behind.caught_up()
    return jobs


async def _members(replica: Components, key: str) -> set[str]:
    return set(await replica.index.client.zrange(key, 0, -1))


async def test_a_place_larger_than_one_variadic_call_puts_every_job_in_its_set(
    replica: Components,
) -> None:
    ready = await _enqueued(replica, 2_100)
    later = await _enqueued(replica, 1_100, delay_ms=60_000)
    keys = replica.index.keys
    await replica.index.client.delete(keys.ready("default", "q"), keys.scheduled("default", "q"))
    await replica.index.place([*ready, *later])
    assert await _members(replica, keys.ready("default", "q")) == {j.id for j in ready}
    assert await _members(replica, keys.scheduled("default", "q")) == {j.id for j in later}
    granted = await lease(replica, n=1000)
    assert [g.job.id for g in granted] == [j.id for j in ready[:1000]]  # best first: FIFO


async def test_a_place_naming_a_job_twice_leaves_it_where_its_last_entry_says(
    replica: Components,
) -> None:
    (queued,) = await _enqueued(replica, 1)
    (granted,) = await lease(replica)
    leased = granted.job
    keys = replica.index.keys
    ready, held = keys.ready("default", "q"), keys.leased("default", "q")
    await replica.index.place([leased, queued])
    assert (await _members(replica, ready), await _members(replica, held)) == ({queued.id}, set())
    await replica.index.place([queued, leased])
    assert (await _members(replica, ready), await _members(replica, held)) == (set(), {queued.id})


async def test_a_place_mixing_jobs_with_and_without_a_concurrency_key_keeps_the_key_counts(
    replica: Components,
) -> None:
    (keyed,) = await _enqueued(replica, 1, concurrency_key="tenant-1")
    (plain,) = await _enqueued(replica, 1)
    granted = await lease(replica, n=2)
    assert {g.job.id for g in granted} == {keyed.id, plain.id}
    keys = replica.index.keys
    counts = keys.key_leased("default", "q")
    assert await replica.index.client.hget(counts, "tenant-1") == "1"
    await replica.index.place([keyed, plain])  # both given back to ready, in one write
    assert await _members(replica, keys.ready("default", "q")) == {keyed.id, plain.id}
    assert await _members(replica, keys.leased("default", "q")) == set()
    assert await replica.index.client.hget(counts, "tenant-1") is None
    owners = keys.job_keys("default", "q")
    assert await replica.index.client.hgetall(owners) == {keyed.id: "tenant-1"}


async def test_a_remove_larger_than_one_variadic_call_drops_every_job(
    replica: Components,
) -> None:
    jobs = await _enqueued(replica, 2_100)
    await replica.index.forget("default", "q", [j.id for j in jobs])
    assert await _members(replica, replica.index.keys.ready("default", "q")) == set()


async def test_a_remove_mixing_jobs_with_and_without_a_concurrency_key_releases_the_key_counts(
    replica: Components,
) -> None:
    (keyed,) = await _enqueued(replica, 1, concurrency_key="tenant-1")
    (plain,) = await _enqueued(replica, 1)
    (other,) = await _enqueued(replica, 1, concurrency_key="tenant-1")
    await lease(replica, n=2)  # the first two, best first
    keys = replica.index.keys
    counts = keys.key_leased("default", "q")
    assert await replica.index.client.hget(counts, "tenant-1") == "1"
    await replica.index.forget("default", "q", [keyed.id, plain.id])
    assert await _members(replica, keys.leased("default", "q")) == set()
    assert await replica.index.client.hget(counts, "tenant-1") is None
    owners = keys.job_keys("default", "q")
    assert await replica.index.client.hgetall(owners) == {other.id: "tenant-1"}
    assert await _members(replica, keys.ready("default", "q")) == {other.id}


async def test_an_extend_larger_than_one_variadic_call_moves_every_held_lease_and_no_other(
    replica: Components,
) -> None:
    await _enqueued(replica, 1_500)
    held = [g.job for g in await lease(replica, n=750) + await lease(replica, n=750)]
    gone = held.pop()  # acked meanwhile: its lease must not come back
    await replica.index.forget("default", "q", [gone.id])
    later = [evolve(j, lease_expires_ms=(j.lease_expires_ms or 0) + 60_000) for j in held]
    await replica.index.extend([*later, evolve(gone, lease_expires_ms=10**13)])
    leased = replica.index.keys.leased("default", "q")
    scores = dict(await replica.index.client.zrange(leased, 0, -1, withscores=True))
    assert scores == {j.id: j.lease_expires_ms for j in later}
