"""The systems the harness measures, in table order.

Each entry names the module and class of a `bench.peers.base.Peer`, the Redis
database number it owns (FLUSHDB before and after, never another one), the
interpreter it runs under ("main" is this virtualenv; "arq" is a separate one,
because arq pins redis<6 and we pin redis>=8.1), and its worker settings as
shown in the table. Pure data: importing it imports no queue library.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["peer", "ours", "reference"]


@dataclass(frozen=True)
class System:
    name: str
    module: str
    cls: str
    kind: Kind
    redis_db: int | None
    workers: str
    python: Literal["main", "arq"] = "main"
    options: dict[str, Any] = field(default_factory=dict)


# fmt: off
SYSTEMS: tuple[System, ...] = (
    System("rq-simple", "bench.peers.rq", "RQPeer", "peer", 1,
           "2 x `rq worker -w rq.SimpleWorker`", options={"worker_class": "rq.SimpleWorker"}),
    System("rq-fork", "bench.peers.rq", "RQPeer", "peer", 2,
           "2 x `rq worker` (forks a horse per job)", options={"worker_class": "rq.Worker"}),
    System("celery-solo", "bench.peers.celery", "CeleryPeer", "peer", 3,
           "2 x `celery worker -P solo`", options={"pool": "solo"}),
    System("celery-prefork", "bench.peers.celery", "CeleryPeer", "peer", 4,
           "1 x `celery worker -P prefork -c 2`", options={"pool": "prefork"}),
    System("arq", "bench.peers.arq", "ArqPeer", "peer", 5,
           "2 x `arq` worker (max_jobs 10)", python="arq"),
    System("dramatiq", "bench.peers.dramatiq", "DramatiqPeer", "peer", 6,
           "`dramatiq -p 2` (8 threads each)"),
    System("huey", "bench.peers.huey", "HueyPeer", "peer", 7,
           "`huey_consumer -k process -w 2`"),
    System("taskiq", "bench.peers.taskiq", "TaskiqPeer", "peer", 8,
           "`taskiq worker -w 2` (RedisStreamBroker)"),
    System("dispatcher-embedded", "bench.peers.dispatcher", "DispatcherPeer", "ours", 9,
           "2 x worker_sdk.Worker (concurrency 100)", options={"backend": "embedded"}),
    System("dispatcher-redis-sqlite", "bench.peers.dispatcher", "DispatcherPeer", "ours", 10,
           "2 x worker_sdk.Worker (concurrency 100)", options={"backend": "sqlite"}),
    System("dispatcher-redis-pg", "bench.peers.dispatcher", "DispatcherPeer", "ours", 11,
           "2 x worker_sdk.Worker (concurrency 100)", options={"backend": "postgres"}),
    System("grpc-echo", "bench.peers.grpc_echo", "EchoPeer", "reference", None,
           "bare grpc.aio unary echo (no queue)"),
)
# fmt: on


def select(only: str = "", skip: str = "") -> list[System]:
    """The systems named in --only (all if empty), minus those in --skip, in table order.

    A name may also be a prefix ending in "*" ("dispatcher-*"). Unknown names raise
    ValueError so that a typo does not silently measure nothing.
    """

    def names(raw: str) -> list[str]:
        return [n.strip() for n in raw.split(",") if n.strip()]

    def matches(pattern: str) -> list[System]:
        if pattern.endswith("*"):
            found = [s for s in SYSTEMS if s.name.startswith(pattern[:-1])]
        else:
            found = [s for s in SYSTEMS if s.name == pattern]
        if not found:
            known = ", ".join(s.name for s in SYSTEMS)
            raise ValueError(f"unknown system {pattern!r}; known: {known}")
        return found

    wanted = {s.name for p in names(only) for s in matches(p)} if only else None
    dropped = {s.name for p in names(skip) for s in matches(p)}
    return [s for s in SYSTEMS if (wanted is None or s.name in wanted) and s.name not in dropped]
