#!/usr/bin/env python3
"""Exit 0 when the dispatcher's grpc.health.v1 service answers SERVING, 1 otherwise.

The container image installs this as `grpc-health-check` (Docker HEALTHCHECK and the
compose healthcheck run it), because grpc_health_probe binaries are not part of the
image. Usage:

    grpc-health-check [ADDRESS] [--service NAME] [--timeout SECONDS]

ADDRESS defaults to 127.0.0.1:$DISPATCHER_PORT (50051). The empty service name is
the server as a whole; the dispatcher reports NOT_SERVING for it while its Redis
index is being rebuilt, while a store is unreachable, and while it drains.
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="grpc-health-check", description=__doc__.splitlines()[0])
    parser.add_argument(
        "address",
        nargs="?",
        default=f"127.0.0.1:{os.environ.get('DISPATCHER_PORT', '50051')}",
        help="host:port of the dispatcher (default 127.0.0.1:$DISPATCHER_PORT or :50051)",
    )
    parser.add_argument("--service", default="", help="service name to ask about (default: server)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for an answer")
    args = parser.parse_args(argv)
    try:
        with grpc.insecure_channel(args.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            answer = stub.Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
    except grpc.RpcError as err:
        print(f"{args.address}: {err.code().name}: {err.details()}", file=sys.stderr)
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    print(f"{args.address}: {status}")
    return 0 if answer.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
