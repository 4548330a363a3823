"""Frozen option dataclasses: how to reach the dispatcher, how to retry, how a worker runs."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta

import grpc

DEFAULT_ADDRESS = "127.0.0.1:50051"


@dataclass(frozen=True)
class RetryOptions:
    """Retries of failed calls: jittered exponential backoff with a cap.

    Only UNAVAILABLE and RESOURCE_EXHAUSTED are retried, for every call (the
    dispatcher answers them before changing anything, and enqueues carry an
    idempotency key); DEADLINE_EXCEEDED is retried for idempotent calls only.
    """

    max_attempts: int = 5  # 1: no retries
    initial: timedelta = timedelta(milliseconds=100)
    maximum: timedelta = timedelta(seconds=5)
    multiplier: float = 2.0
    jitter: float = 0.2  # +/- this fraction of each delay
    codes: frozenset[grpc.StatusCode] = frozenset(
        {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}
    )


@dataclass(frozen=True)
class ConnectOptions:
    """Where the dispatcher is and how to talk to it.

    Plaintext is for loopback; anywhere else, set `tls_ca` (and `tls_cert` with
    `tls_key` for mutual TLS). A `token` is sent as `authorization: Bearer`
    on every call; it is refused over plaintext to a non-loopback address.
    """

    address: str = DEFAULT_ADDRESS
    namespace: str = "default"
    token: str = field(default="", repr=False)
    tls_ca: str = ""  # PEM file of the CA that signed the server's certificate
    tls_cert: str = ""  # PEM file of our client certificate (mutual TLS)
    tls_key: str = ""  # PEM file of its private key
    tls_server_name: str = ""  # expected name in the server's certificate, if not the host
    timeout: timedelta = timedelta(seconds=10)  # deadline of each call (not of long-polls)
    retry: RetryOptions = field(default_factory=RetryOptions)

    @classmethod
    def from_env(cls, **overrides: object) -> ConnectOptions:
        """Options from DISPATCHER_ADDRESS, _NAMESPACE, _TOKEN, _TLS_CA, _TLS_CERT, _TLS_KEY."""
        env = os.environ
        values: dict[str, object] = {
            "address": env.get("DISPATCHER_ADDRESS", DEFAULT_ADDRESS),
            "namespace": env.get("DISPATCHER_NAMESPACE", "default"),
            "token": env.get("DISPATCHER_TOKEN", ""),
            "tls_ca": env.get("DISPATCHER_TLS_CA", ""),
            "tls_cert": env.get("DISPATCHER_TLS_CERT", ""),
            "tls_key": env.get("DISPATCHER_TLS_KEY", ""),
        }
        values.update({k: v for k, v in overrides.items() if v not in (None, "")})
        return cls(**values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class WorkerOptions:
    """How a worker leases and runs jobs."""

    queues: tuple[str, ...] = ("default",)  # leased in this order of preference
    concurrency: int = 10  # handlers running at once
    worker_id: str = ""  # empty: host-pid-random
    lease_duration: timedelta | None = None  # None: each job's own (or the server's default)
    poll_wait: timedelta = timedelta(seconds=20)  # how long one Lease long-poll may wait
    heartbeat_every: float = 1 / 3  # of the shortest lease in flight
    shutdown_grace: timedelta = timedelta(seconds=30)  # for running jobs to finish on stop
    max_lease_batch: int = 100  # jobs asked for in one Lease call
    # Lease beyond the free slots as many jobs as finished during one of the last
    # two Lease calls (at most `concurrency`); they wait, leased and renewed, for
    # a slot. With short jobs each call then carries more; with long ones none
    # finish during a call, so none are taken ahead. False: never more than free slots.
    lease_ahead: bool = True
    thread_pool_size: int | None = None  # for plain (non-async) handlers; None: concurrency
    event_loop: str = "auto"  # for run(): "auto" (uvloop where installed), "uvloop", "asyncio"
