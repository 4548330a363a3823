"""Every Redis key and channel the dispatcher uses, built in this one module.

Layout (P is the deployment prefix, default "dsp"; T is "<namespace>/<queue>"):

    P:{T}:ready       ZSET  score = priority rank (0 = critical), member = job id;
                            equal scores sort by id, and ids sort by creation: FIFO
    P:{T}:scheduled   ZSET  score = run_at (ms), member = job id
    P:{T}:leased      ZSET  score = lease expiry (ms), member = job id
    P:{T}:paused      STRING present while the queue is paused (lease.lua grants nothing)
    P:{T}:limits      HASH  max_concurrency, rate, burst, key_max_concurrency, key_rate, key_burst
    P:{T}:bucket      HASH  tokens, ts: the queue's lease-rate token bucket
    P:{T}:jobkey      HASH  job id -> concurrency key, for indexed jobs that have one
    P:{T}:keyleased   HASH  concurrency key -> jobs of that key in the leased set
    P:{T}:keytokens   HASH  concurrency key -> tokens of its lease-rate bucket
    P:{T}:keyrefill   HASH  concurrency key -> when its bucket was last refilled (ms)
    P:queues          SET   every T that has ever held a job (for the reaper)
    P:workers:N       ZSET  score = last seen (ms), member = worker id, per namespace N
    P:{N}:quota       HASH  tokens, ts: namespace N's enqueue-rate bucket
    P:index:built     STRING present once the index has been built from SQL
    P:index:rebuild   STRING lock held by the replica rebuilding the index
    P:wake            channel: when a queue gains ready jobs, "T" (anyone may look),
                      or "T R N" from an enqueue by replica R that made N jobs ready
    P:updates         channel: JSON list of [job id, namespace, queue, version]

The `{T}` hash tag puts one queue's keys in one cluster slot, so each Lua
script touches one slot. Namespace and queue names cannot contain `{`, `}`,
`:` or `/` (see domain/validation.py), so T cannot escape its tag.
"""

from __future__ import annotations

import re

PREFIX_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class Keys:
    """Key builders under one deployment prefix."""

    def __init__(self, prefix: str = "dsp") -> None:
        if not PREFIX_RE.fullmatch(prefix):
            raise ValueError("the Redis key prefix must be 1-64 characters of [A-Za-z0-9_.-]")
        self.prefix = prefix

    @staticmethod
    def queue_ref(namespace: str, queue: str) -> str:
        return f"{namespace}/{queue}"

    @staticmethod
    def split_ref(ref: str) -> tuple[str, str]:
        namespace, _, queue = ref.partition("/")
        return namespace, queue

    @staticmethod
    def wake_prefix(namespace: str, queue: str, origin: str) -> str:
        """The start of an enqueue's wake-up; enqueue.lua appends how many jobs it made ready."""
        return f"{Keys.queue_ref(namespace, queue)} {origin} "

    @staticmethod
    def split_wake(message: str) -> tuple[tuple[str, str], str, int | None]:
        """(queue, origin replica or "", jobs made ready or None for "any number")."""
        ref, _, rest = message.partition(" ")
        origin, _, count = rest.partition(" ")
        return Keys.split_ref(ref), origin, int(count) if count.isdigit() else None

    def _queue_key(self, namespace: str, queue: str, kind: str) -> str:
        return f"{self.prefix}:{{{namespace}/{queue}}}:{kind}"

    def ready(self, namespace: str, queue: str) -> str:
        return self._queue_key(namespace, queue, "ready")

    def scheduled(self, namespace: str, queue: str) -> str:
        return self._queue_key(namespace, queue, "scheduled")

    def leased(self, namespace: str, queue: str) -> str:
        return self._queue_key(namespace, queue, "leased")

    def paused(self, namespace: str, queue: str) -> str:
        return self._queue_key(namespace, queue, "paused")

    def limits(self, namespace: str, queue: str) -> str:
        return self._queue_key(namespace, queue, "limits")

    def bucket(self, namespace: str, queue: str) -> str:
        return self._queue_key(namespace, queue, "bucket")

    def job_keys(self, namespace: str, queue: str) -> str:
        return self._queue_key(namespace, queue, "jobkey")

    def key_leased(self, namespace: str, queue: str) -> str:
        return self._queue_key(namespace, queue, "keyleased")

    def key_tokens(self, namespace: str, queue: str) -> str:
        return self._queue_key(namespace, queue, "keytokens")

    def key_refill(self, namespace: str, queue: str) -> str:
        return self._queue_key(namespace, queue, "keyrefill")

    def queues(self) -> str:
        return f"{self.prefix}:queues"

    def workers(self, namespace: str) -> str:
        return f"{self.prefix}:workers:{namespace}"

    def quota_bucket(self, namespace: str) -> str:
        return f"{self.prefix}:{{{namespace}}}:quota"

    def index_built(self) -> str:
        return f"{self.prefix}:index:built"

    def rebuild_lock(self) -> str:
        return f"{self.prefix}:index:rebuild"

    def wake_channel(self) -> str:
        return f"{self.prefix}:wake"

    def updates_channel(self) -> str:
        return f"{self.prefix}:updates"

    def pattern(self) -> str:
        """A SCAN pattern matching every key of this deployment."""
        return f"{self.prefix}:*"
