"""The Redis index: which jobs are ready, scheduled or leased, per queue.

Redis holds no fact that SQL does not; every method here can be replayed
from SQL (see `place`). Each method groups its jobs by queue and sends one
script call per queue, all in one pipeline: one round trip per batch.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from redis import exceptions as redis_errors

from dispatcher import telemetry
from dispatcher.domain.errors import Unavailable
from dispatcher.domain.models import Job, JobState, Placeable, QueueSettings
from dispatcher.store.redis.keys import Keys
from dispatcher.store.redis.scripts import Scripts

QueueRef = tuple[str, str]
# A transition announced on the updates channel: job id, namespace, queue, version.
Notice = tuple[str, str, str, int]
P = TypeVar("P", bound=Placeable)


@asynccontextmanager
async def translate_errors(step: str = "") -> AsyncIterator[None]:
    """Turn Redis failures into `Unavailable` at the store's edge; trace named steps."""
    try:
        if step:
            with telemetry.span(f"redis.{step}"):
                yield
        else:
            yield
    except (redis_errors.RedisError, OSError) as exc:
        raise Unavailable("Redis is unavailable") from exc


def placement(job: Placeable) -> tuple[str, int]:
    """Where a job belongs in the index given its SQL row, and with which score."""
    if job.state is JobState.QUEUED:
        return "r", int(job.priority)
    if job.state is JobState.SCHEDULED:
        return "s", job.run_at_ms
    if job.state is JobState.LEASED and job.lease_expires_ms is not None:
        return "l", job.lease_expires_ms
    return "-", 0


def _by_queue(jobs: Iterable[P]) -> dict[QueueRef, list[P]]:
    groups: dict[QueueRef, list[P]] = defaultdict(list)
    for job in jobs:
        groups[(job.namespace, job.queue)].append(job)
    return groups


class RedisIndex:
    """Index operations over one Redis client."""

    def __init__(self, client: Any, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self.scripts = Scripts.register(client)
        # Names this replica in its enqueue wake-ups, so that its listener can skip
        # them: the enqueue already woke the local waiters (see `enqueue`).
        self.origin = secrets.token_hex(6)

    def _queue_keys(self, ns: str, q: str) -> list[str]:
        """The keys of place.lua and remove.lua."""
        k = self.keys
        return [
            k.ready(ns, q),
            k.scheduled(ns, q),
            k.leased(ns, q),
            k.job_keys(ns, q),
            k.key_leased(ns, q),
        ]

    def _notify(self, pipe: Any, notices: Sequence[Notice]) -> None:
        if notices:
            payload = json.dumps([list(n) for n in notices], separators=(",", ":"))
            pipe.publish(self.keys.updates_channel(), payload)

    async def enqueue(self, jobs: Sequence[Job], notices: Sequence[Notice]) -> None:
        """Index newly inserted jobs (QUEUED or SCHEDULED) where their state says,
        announce them, and publish `notices` (of other jobs).

        The script announces the jobs it indexes: it publishes their update
        notices only while some replica follows the updates channel, so that
        without a follower no notice is encoded or sent (see listener.py).
        The wake-up names this replica (`origin`): the caller wakes local waiters
        itself, and other replicas wake as many as there are jobs made ready."""
        updates = self.keys.updates_channel()

        def fill(pipe: Any) -> None:
            for (ns, q), group in _by_queue(jobs).items():
                ref = Keys.queue_ref(ns, q)
                wake = Keys.wake_prefix(ns, q, self.origin)
                lines = []
                for j in group:
                    where, score = placement(j)
                    lines.append(f"{j.id}\t{where}\t{score}\t{j.version}\t{j.concurrency_key}\n")
                # A name is [A-Za-z0-9_.-] (validation.check_name): no JSON escaping.
                notice_queue = f'"{ns}","{q}",'
                args = [self.keys.wake_channel(), wake, "".join(lines), updates, notice_queue]
                keys = [
                    self.keys.ready(ns, q),
                    self.keys.scheduled(ns, q),
                    self.keys.job_keys(ns, q),
                ]
                Scripts.call(pipe, self.scripts.enqueue, keys, args)
                pipe.sadd(self.keys.queues(), ref)
            self._notify(pipe, notices)

        async with translate_errors("enqueue"):
            await self.scripts.pipeline(self.client, fill)

    async def lease(self, ns: str, queue: str, n: int, expire_ms: int, now_ms: int) -> list[str]:
        """Pop up to n ready jobs into the leased set (provisionally, until SQL confirms),
        within the queue's pause flag and limits."""
        k = self.keys
        async with translate_errors("lease"):
            keys = [
                k.ready(ns, queue),
                k.leased(ns, queue),
                k.paused(ns, queue),
                k.limits(ns, queue),
                k.bucket(ns, queue),
                k.job_keys(ns, queue),
                k.key_leased(ns, queue),
                k.key_tokens(ns, queue),
                k.key_refill(ns, queue),
            ]
            ids = await self.scripts.lease(keys=keys, args=[n, expire_ms, now_ms])
        return [i.decode() if isinstance(i, bytes) else i for i in ids]

    async def hand_off(self, jobs: Sequence[Job]) -> set[str]:
        """Record leased jobs not yet inserted (handed to waiting Leases) in their
        queues' leased sets, unless a queue is paused or limited; return the ids
        recorded. The insert follows: if it fails, `forget` them (the reaper
        would drop them once expired, finding no row)."""
        groups = _by_queue(jobs)

        def fill(pipe: Any) -> None:
            for (ns, q), group in groups.items():
                args: list[Any] = []
                for j in group:
                    args += [j.id, j.lease_expires_ms]
                keys = [self.keys.leased(ns, q), self.keys.paused(ns, q), self.keys.limits(ns, q)]
                Scripts.call(pipe, self.scripts.hand_off, keys, args)
                pipe.sadd(self.keys.queues(), Keys.queue_ref(ns, q))

        async with translate_errors("hand_off"):
            replies = await self.scripts.pipeline(self.client, fill)
        recorded = replies[::2]  # each script's answer, then its set add
        return {j.id for group, ok in zip(groups.values(), recorded, strict=True) if ok
                for j in group}  # fmt: skip

    async def extend(self, jobs: Sequence[Job]) -> None:
        def fill(pipe: Any) -> None:
            for (ns, q), group in _by_queue(jobs).items():
                args: list[Any] = []
                for j in group:
                    args += [j.id, j.lease_expires_ms]
                Scripts.call(pipe, self.scripts.extend, [self.keys.leased(ns, q)], args)

        async with translate_errors("extend"):
            await self.scripts.pipeline(self.client, fill)

    async def place(self, jobs: Sequence[Placeable], notices: Sequence[Notice] = ()) -> None:
        """Put each job where its SQL state says it belongs (terminal: nowhere)."""
        if not jobs and not notices:
            return

        def fill(pipe: Any) -> None:
            for (ns, q), group in _by_queue(jobs).items():
                ref = Keys.queue_ref(ns, q)
                terminal = [j.id for j in group if j.state.terminal]
                if terminal:
                    Scripts.call(pipe, self.scripts.remove, self._queue_keys(ns, q), terminal)
                live = [j for j in group if not j.state.terminal]
                if live:
                    args: list[Any] = [self.keys.wake_channel(), ref]
                    for j in live:
                        where, score = placement(j)
                        args += [j.id, where, score, j.concurrency_key]
                    Scripts.call(pipe, self.scripts.place, self._queue_keys(ns, q), args)
                    pipe.sadd(self.keys.queues(), ref)
            self._notify(pipe, notices)

        async with translate_errors("place"):
            await self.scripts.pipeline(self.client, fill)

    async def forget(self, ns: str, queue: str, ids: Sequence[str]) -> None:
        """Drop ids from every structure of a queue (stale entries with no live SQL row)."""
        if not ids:
            return
        async with translate_errors("forget"):
            await self.scripts.remove(keys=self._queue_keys(ns, queue), args=list(ids))

    async def queues(self) -> list[QueueRef]:
        async with translate_errors():
            refs = await self.client.smembers(self.keys.queues())
        out = [Keys.split_ref(r.decode() if isinstance(r, bytes) else r) for r in refs]
        return sorted(out)

    async def overdue(
        self, queues: Sequence[QueueRef], now_ms: int, limit: int
    ) -> tuple[dict[QueueRef, list[str]], dict[QueueRef, list[str]]]:
        """Per queue: scheduled jobs now due, and leases now expired (at most `limit` each)."""
        async with translate_errors():
            pipe = self.client.pipeline(transaction=False)
            for ns, q in queues:
                pipe.zrangebyscore(self.keys.scheduled(ns, q), "-inf", now_ms, start=0, num=limit)
                pipe.zrangebyscore(self.keys.leased(ns, q), "-inf", now_ms, start=0, num=limit)
            replies = await pipe.execute()
        due: dict[QueueRef, list[str]] = {}
        expired: dict[QueueRef, list[str]] = {}
        for i, ref in enumerate(queues):
            d, e = replies[2 * i], replies[2 * i + 1]
            if d:
                due[ref] = [x.decode() if isinstance(x, bytes) else x for x in d]
            if e:
                expired[ref] = [x.decode() if isinstance(x, bytes) else x for x in e]
        return due, expired

    async def depth(self, ns: str, queue: str) -> tuple[int, int, int]:
        """Counts of ready, scheduled and leased entries of one queue."""
        async with translate_errors():
            pipe = self.client.pipeline(transaction=False)
            for key in self._queue_keys(ns, queue)[:3]:
                pipe.zcard(key)
            r, s, lz = await pipe.execute()
        return int(r), int(s), int(lz)

    async def ready_by_rank(self, ns: str, queue: str) -> list[tuple[int, str]]:
        """Per priority rank (0..3): the number of ready jobs and the id of the first."""
        key = self.keys.ready(ns, queue)
        async with translate_errors():
            pipe = self.client.pipeline(transaction=False)
            for rank in range(4):
                pipe.zcount(key, rank, rank)
                pipe.zrangebyscore(key, rank, rank, start=0, num=1)
            replies = await pipe.execute()
        return [
            (int(replies[2 * r]), _text(replies[2 * r + 1][0]) if replies[2 * r + 1] else "")
            for r in range(4)
        ]

    async def mirror_settings(self, settings: Sequence[QueueSettings]) -> None:
        """Copy queue settings from SQL: the paused flag and the limits lease.lua reads."""
        if not settings:
            return
        async with translate_errors():
            pipe = self.client.pipeline(transaction=False)
            for st in settings:
                ns, q = st.namespace, st.name
                if st.paused:
                    pipe.set(self.keys.paused(ns, q), 1)
                else:
                    pipe.delete(self.keys.paused(ns, q))
                pipe.hset(
                    self.keys.limits(ns, q),
                    mapping={
                        "max_concurrency": st.max_concurrency,
                        "rate": st.rate_per_s,
                        "burst": st.burst,
                        "key_max_concurrency": st.key_max_concurrency,
                        "key_rate": st.key_rate_per_s,
                        "key_burst": st.key_burst,
                    },
                )
            await pipe.execute()

    async def take_quota(self, namespace: str, rate: float, burst: int, now_ms: int, n: int) -> int:
        """0 when n enqueues fit the namespace's rate, else the wait in ms."""
        async with translate_errors("quota"):
            got = int(
                await self.scripts.quota(
                    keys=[self.keys.quota_bucket(namespace)], args=[rate, burst, now_ms, n]
                )
            )
        return 0 if got == 1 else -got

    async def key_leased_count(self, ns: str, queue: str, ckey: str) -> int:
        async with translate_errors():
            return int(await self.client.hget(self.keys.key_leased(ns, queue), ckey) or 0)

    async def time_ms(self) -> int:
        async with translate_errors():
            seconds, micros = await self.client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    async def is_built(self) -> bool:
        async with translate_errors():
            return bool(await self.client.exists(self.keys.index_built()))

    async def mark_built(self, now_ms: int) -> None:
        async with translate_errors():
            await self.client.set(self.keys.index_built(), now_ms)

    async def try_lock_rebuild(self, owner: str, ttl_ms: int) -> bool:
        async with translate_errors():
            got = await self.client.set(self.keys.rebuild_lock(), owner, nx=True, px=ttl_ms)
            if got:
                return True
            current = await self.client.get(self.keys.rebuild_lock())
            if (
                current is not None
                and (current.decode() if isinstance(current, bytes) else current) == owner
            ):
                await self.client.pexpire(self.keys.rebuild_lock(), ttl_ms)
                return True
            return False

    async def unlock_rebuild(self) -> None:
        async with translate_errors():
            await self.client.delete(self.keys.rebuild_lock())

    async def ping(self) -> None:
        async with translate_errors():
            await self.client.ping()

    async def membership(self, jobs: Sequence[Placeable]) -> list[tuple[str, int | None]]:
        """For each job, where the index has it ("r", "s", "l" or "-") and with which score."""
        # One ZMSCORE per queue and index (ready, scheduled, leased), not one ZSCORE
        # per job and index: a page of 1,000 jobs is a few commands, not 3,000.
        by_queue: dict[tuple[str, str], list[int]] = {}
        for i, j in enumerate(jobs):
            by_queue.setdefault((j.namespace, j.queue), []).append(i)
        scores: list[list[float | None]] = [[None, None, None] for _ in jobs]
        async with translate_errors():
            pipe = self.client.pipeline(transaction=False)
            for (ns, queue), members in by_queue.items():
                for key in self._queue_keys(ns, queue)[:3]:
                    pipe.zmscore(key, [jobs[i].id for i in members])
            replies = iter(await pipe.execute())
        for members in by_queue.values():
            for where in range(3):
                for i, score in zip(members, next(replies), strict=True):
                    scores[i][where] = score
        out: list[tuple[str, int | None]] = []
        for i in range(len(jobs)):
            found = [(w, s) for w, s in zip("rsl", scores[i], strict=True) if s is not None]
            out.append(
                (found[0][0], int(found[0][1]))
                if len(found) == 1
                else ("-" if not found else "*", None)
            )
        return out

    async def touch_workers(self, seen: dict[str, dict[str, int]], forget_before_ms: int) -> None:
        """Record when workers were last seen ({namespace: {worker: ms}}); drop stale ones."""
        async with translate_errors():
            pipe = self.client.pipeline(transaction=False)
            for ns, workers in seen.items():
                key = self.keys.workers(ns)
                pipe.zadd(key, workers, gt=True)
                pipe.zremrangebyscore(key, "-inf", forget_before_ms)
            await pipe.execute()

    async def workers(self, namespace: str) -> dict[str, int]:
        async with translate_errors():
            pairs = await self.client.zrange(self.keys.workers(namespace), 0, -1, withscores=True)
        return {_text(w): int(score) for w, score in pairs}

    def subscriber(self) -> Subscriber:
        """A pub/sub connection of its own (see `Subscriber`)."""
        return Subscriber(self.client.pubsub())


@dataclass(frozen=True)
class PubSubMessage:
    """One pub/sub message: `kind` "message", or "subscribe"/"unsubscribe" when
    Redis confirms a change of channels (then `data` is the count of channels)."""

    kind: str
    channel: str
    data: str


class Subscriber:
    """One pub/sub connection whose channels may change while another task reads it."""

    def __init__(self, pubsub: Any) -> None:
        self._pubsub = pubsub

    async def subscribe(self, *channels: str) -> None:
        async with translate_errors():
            await self._pubsub.subscribe(*channels)
        _honour_cancel()

    async def unsubscribe(self, *channels: str) -> None:
        async with translate_errors():
            await self._pubsub.unsubscribe(*channels)
        _honour_cancel()

    async def next(self, timeout_s: float) -> PubSubMessage | None:
        """The next message, or None if none came within `timeout_s`."""
        async with translate_errors():
            msg = await self._pubsub.get_message(timeout=timeout_s)
        _honour_cancel()
        if msg is None:
            return None
        return PubSubMessage(_text(msg["type"]), _text(msg["channel"]), _text(msg["data"]))

    async def close(self) -> None:
        try:
            await self._pubsub.aclose()
        except (redis_errors.RedisError, OSError):
            pass


def _honour_cancel() -> None:
    """Raise CancelledError if this task is being cancelled. A cancel that arrived
    as a pub/sub call finished can be swallowed by the client's
    `asyncio.wait_for` (fakeredis, Python < 3.12)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
