"""`python -m worker_sdk run module:worker`: run a worker defined in your code.

    python -m worker_sdk run app.tasks:worker --address 127.0.0.1:50051 --queues emails,sms

Flags override the worker's own options; the connection comes from flags or
DISPATCHER_ADDRESS, DISPATCHER_NAMESPACE, DISPATCHER_TOKEN, DISPATCHER_TLS_CA,
DISPATCHER_TLS_CERT, DISPATCHER_TLS_KEY; queues, concurrency and the event
loop from DISPATCHER_QUEUES, DISPATCHER_CONCURRENCY and DISPATCHER_EVENT_LOOP.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from datetime import timedelta

from worker_sdk import event_loop
from worker_sdk.options import ConnectOptions
from worker_sdk.worker import Worker


def load(reference: str) -> Worker:
    """The Worker named by 'package.module:attribute'."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise SystemExit(f"expected module:attribute, got {reference!r}")
    sys.path.insert(0, os.getcwd())
    worker = getattr(importlib.import_module(module_name), attribute, None)
    if not isinstance(worker, Worker):
        raise SystemExit(f"{reference} is not a worker_sdk.Worker")
    return worker


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m worker_sdk", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a worker until SIGTERM or SIGINT")
    run.add_argument("worker", help="module:attribute of a worker_sdk.Worker")
    run.add_argument("--address", help="host:port [DISPATCHER_ADDRESS]")
    run.add_argument("--namespace", help="[DISPATCHER_NAMESPACE]")
    run.add_argument("--token", help="API token [DISPATCHER_TOKEN]")
    run.add_argument("--tls-ca", help="CA certificate (PEM) [DISPATCHER_TLS_CA]")
    run.add_argument("--tls-cert", help="client certificate for mTLS [DISPATCHER_TLS_CERT]")
    run.add_argument("--tls-key", help="its private key [DISPATCHER_TLS_KEY]")
    run.add_argument("--queues", default=os.environ.get("DISPATCHER_QUEUES"),
                     help="comma list, in order of preference [DISPATCHER_QUEUES]")  # fmt: skip
    run.add_argument("--concurrency", type=int, default=_env_int("DISPATCHER_CONCURRENCY"),
                     help="handlers running at once [DISPATCHER_CONCURRENCY]")  # fmt: skip
    run.add_argument("--shutdown-grace", type=float, help="seconds for running jobs on stop")
    run.add_argument("--no-lease-ahead", action="store_true",
                     help="lease no more jobs than free handler slots")  # fmt: skip
    run.add_argument("--event-loop", choices=event_loop.CHOICES,
                     default=os.environ.get("DISPATCHER_EVENT_LOOP"),
                     help="auto: uvloop where installed [DISPATCHER_EVENT_LOOP]")  # fmt: skip
    run.add_argument("--log-level", default=os.environ.get("DISPATCHER_LOG_LEVEL", "INFO"))
    return p.parse_args(argv)


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    worker = load(args.worker)
    changes: dict[str, object] = {}
    if args.queues:
        changes["queues"] = tuple(q for q in args.queues.split(",") if q)
    if args.concurrency:
        changes["concurrency"] = args.concurrency
    if args.shutdown_grace is not None:
        changes["shutdown_grace"] = timedelta(seconds=args.shutdown_grace)
    if args.event_loop:
        changes["event_loop"] = args.event_loop
    if args.no_lease_ahead:
        changes["lease_ahead"] = False
    worker.options = dataclasses.replace(worker.options, **changes)  # type: ignore[arg-type]
    base = worker.connect or ConnectOptions.from_env()
    flags = {"address": args.address, "namespace": args.namespace, "token": args.token,
             "tls_ca": args.tls_ca, "tls_cert": args.tls_cert, "tls_key": args.tls_key}  # fmt: skip
    worker.connect = dataclasses.replace(base, **{k: v for k, v in flags.items() if v})
    try:
        worker.run()
    except event_loop.LoopUnavailable as exc:
        print(f"worker_sdk: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
