"""Operator subcommands of `dispatcher`: they talk to a running server over gRPC.

Readable tables by default, `--json` for scripts. The address comes from
`--address` or DISPATCHER_ADDRESS (default 127.0.0.1:50051).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from dispatcher.channel import open_channel
from worker_sdk._proto.dispatch.v1 import admin_pb2 as apb
from worker_sdk._proto.dispatch.v1 import admin_pb2_grpc, dispatcher_pb2_grpc
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2 as pb
from worker_sdk._proto.dispatch.v1 import job_pb2 as jpb

TIMEOUT_S = 30.0
STATES = {
    s.name.removeprefix("JOB_STATE_").lower(): jpb.JobState.Value(s.name)
    for s in jpb.JobState.DESCRIPTOR.values
    if s.number
}
PRIORITIES = {
    p.name.removeprefix("PRIORITY_").lower(): jpb.Priority.Value(p.name)
    for p in jpb.Priority.DESCRIPTOR.values
    if p.number
}


def add_commands(sub: Any) -> None:
    """Register the operator subcommands on the top-level subparsers."""

    def common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--address",
            default=os.environ.get("DISPATCHER_ADDRESS", "127.0.0.1:50051"),
            help="dispatcher host:port [DISPATCHER_ADDRESS]",
        )
        p.add_argument("--namespace", default="", help="namespace (default: default)")
        p.add_argument(
            "--token",
            default=os.environ.get("DISPATCHER_TOKEN", ""),
            help="bearer token [DISPATCHER_TOKEN]",
        )
        p.add_argument(
            "--tls-ca",
            default=os.environ.get("DISPATCHER_TLS_CA", ""),
            help="CA bundle to verify the server: connects with TLS [DISPATCHER_TLS_CA]",
        )
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")
        return p

    p = common(sub.add_parser("queues", help="list queues with their statistics"))
    p.set_defaults(run=cmd_queues)

    jobs = sub.add_parser("jobs", help="list or show jobs").add_subparsers(
        dest="jobs_cmd", required=True
    )
    p = common(jobs.add_parser("list", help="list the jobs of a queue, newest first"))
    p.add_argument("--queue", required=True)
    p.add_argument("--state", choices=sorted(STATES), help="only jobs in this state")
    p.add_argument("--limit", type=int, default=50, help="at most this many jobs (default 50)")
    p.set_defaults(run=cmd_jobs_list)
    p = common(jobs.add_parser("show", help="show one job"))
    p.add_argument("job_id")
    p.set_defaults(run=cmd_jobs_show)

    dl = sub.add_parser("dead-letter", help="dead-lettered jobs").add_subparsers(
        dest="dl_cmd", required=True
    )
    p = common(dl.add_parser("retry", help="move dead-lettered jobs back to the queue"))
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--job", default="", help="one job id")
    target.add_argument("--queue", default="", help="every dead-lettered job of a queue")
    p.set_defaults(run=cmd_dead_letter_retry)

    p = common(sub.add_parser("purge", help="delete waiting jobs of a queue"))
    p.add_argument("--queue", required=True)
    p.add_argument(
        "--state",
        action="append",
        choices=sorted(set(STATES) - {"leased"}),
        help="states to purge (repeatable; default queued and scheduled)",
    )
    p.add_argument("--yes", action="store_true", help="do it (without it, nothing is deleted)")
    p.set_defaults(run=cmd_purge)

    p = common(sub.add_parser("pause", help="stop granting leases from a queue"))
    p.add_argument("--queue", required=True)
    p.set_defaults(run=cmd_pause)
    p = common(sub.add_parser("resume", help="grant leases from a paused queue again"))
    p.add_argument("--queue", required=True)
    p.set_defaults(run=cmd_resume)
    p = common(sub.add_parser("limits", help="set a queue's limits (0 removes one)"))
    p.add_argument("--queue", required=True)
    p.add_argument("--max-depth", type=int, help="most QUEUED + SCHEDULED jobs")
    p.add_argument("--max-concurrency", type=int, help="most jobs leased at once")
    p.add_argument("--rate", type=float, help="most leases per second")
    p.add_argument("--burst", type=int, help="leases allowed at once above the rate")
    p.add_argument("--key-max-concurrency", type=int, help="the same, per concurrency key")
    p.add_argument("--key-rate", type=float, help="leases per second, per concurrency key")
    p.add_argument("--key-burst", type=int, help="burst per concurrency key")
    p.set_defaults(run=cmd_limits)
    p = common(sub.add_parser("quotas", help="set a namespace's quotas (0 removes one)"))
    p.add_argument("--enqueue-rate", type=float, help="jobs accepted per second")
    p.add_argument("--enqueue-burst", type=int, help="jobs accepted at once above the rate")
    p.add_argument("--max-live-jobs", type=int, help="unfinished jobs at once")
    p.add_argument("--max-leases", type=int, help="jobs leased at once")
    p.set_defaults(run=cmd_quotas)
    p = common(sub.add_parser("cancel", help="cancel a job"))
    p.add_argument("job_id")
    p.add_argument("--reason", default="", help="recorded as the job's last error")
    p.set_defaults(run=cmd_cancel)

    p = common(sub.add_parser("workers", help="list workers seen recently and their leases"))
    p.set_defaults(run=cmd_workers)

    p = common(sub.add_parser("enqueue", help="enqueue one job (for debugging)"))
    p.add_argument("--queue", required=True)
    p.add_argument("--type", required=True)
    p.add_argument("--payload", default="", help="payload text (sent as UTF-8 bytes)")
    p.add_argument("--content-type", default="")
    p.add_argument("--priority", choices=sorted(PRIORITIES), default="default")
    p.add_argument("--delay", type=float, default=0.0, help="seconds before it may run")
    p.add_argument("--max-attempts", type=int, default=0)
    p.add_argument("--idempotency-key", default="")
    p.set_defaults(run=cmd_enqueue)

    from dispatcher import cli_schedules  # here: it imports this module's helpers

    cli_schedules.add_commands(sub, common)


def run(args: argparse.Namespace) -> int:
    try:
        with open_channel(args.address, args.token, args.tls_ca) as channel:
            return int(args.run(args, channel))
    except grpc.RpcError as exc:
        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1


def _emit(args: argparse.Namespace, message: Message, table: Callable[[], None]) -> int:
    if args.json:
        print(json.dumps(MessageToDict(message), indent=2, sort_keys=True))
    else:
        table()
    return 0


def _print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _when(ts: Any) -> str:
    if not ts.seconds and not ts.nanos:
        return "-"
    return datetime.fromtimestamp(ts.seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _state(n: int) -> str:
    return jpb.JobState.Name(n).removeprefix("JOB_STATE_").lower()  # type: ignore[arg-type]


def cmd_queues(args: argparse.Namespace, channel: grpc.Channel) -> int:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    resp, token, queues = None, "", []
    while True:
        resp = stub.ListQueues(
            apb.ListQueuesRequest(namespace=args.namespace, page_token=token), timeout=TIMEOUT_S
        )
        queues += list(resp.queues)
        token = resp.next_page_token
        if not token:
            break
    everything = apb.ListQueuesResponse(queues=queues)

    def table() -> None:
        rows = []
        for q in queues:
            total = {
                k: sum(getattr(p, k) for p in q.priorities)
                for k in ("queued", "scheduled", "leased", "dead_lettered")
            }
            oldest = max((p.oldest_queued_age.seconds for p in q.priorities), default=0)
            rows.append(
                [
                    q.name,
                    total["queued"],
                    total["scheduled"],
                    total["leased"],
                    total["dead_lettered"],
                    f"{oldest}s",
                    q.succeeded_last_minute,
                ]
            )
        _print_table(["QUEUE", "QUEUED", "SCHEDULED", "LEASED", "DEAD", "OLDEST", "DONE/MIN"], rows)

    return _emit(args, everything, table)


def cmd_jobs_list(args: argparse.Namespace, channel: grpc.Channel) -> int:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    jobs: list[jpb.Job] = []
    token = ""
    while len(jobs) < args.limit:
        resp = stub.ListJobs(
            apb.ListJobsRequest(
                namespace=args.namespace,
                queue=args.queue,
                state=STATES.get(args.state or "", jpb.JOB_STATE_UNSPECIFIED),
                page_size=min(1000, args.limit - len(jobs)),
                page_token=token,
            ),
            timeout=TIMEOUT_S,
        )
        jobs += list(resp.jobs)
        token = resp.next_page_token
        if not token:
            break
    out = apb.ListJobsResponse(jobs=jobs)

    def table() -> None:
        _print_table(
            ["ID", "TYPE", "STATE", "ATTEMPT", "CREATED", "LAST ERROR"],
            [
                [
                    j.id,
                    j.type,
                    _state(j.state),
                    f"{j.attempt}/{j.max_attempts}",
                    _when(j.create_time),
                    j.last_error[:40],
                ]
                for j in jobs
            ],
        )

    return _emit(args, out, table)


def cmd_jobs_show(args: argparse.Namespace, channel: grpc.Channel) -> int:
    stub = dispatcher_pb2_grpc.DispatcherServiceStub(channel)
    job = stub.GetStatus(
        pb.GetStatusRequest(namespace=args.namespace, job_id=args.job_id), timeout=TIMEOUT_S
    ).job

    def table() -> None:
        rows: list[list[object]] = [
            ["id", job.id],
            ["queue", job.queue],
            ["type", job.type],
            ["state", _state(job.state)],
            ["priority", jpb.Priority.Name(job.priority).removeprefix("PRIORITY_").lower()],
            ["attempt", f"{job.attempt}/{job.max_attempts}"],
            ["created", _when(job.create_time)],
            ["started", _when(job.start_time)],
            ["finished", _when(job.finish_time)],
            ["next run", _when(job.next_run_time)],
            ["lease holder", job.lease_holder or "-"],
            ["progress", f"{job.progress.percent:g}% {job.progress.message}".strip()],
            ["last error", job.last_error or "-"],
            ["payload bytes", len(job.payload)],
            ["result bytes", len(job.result)],
            ["version", job.version],
        ]
        _print_table(["FIELD", "VALUE"], rows)

    return _emit(args, job, table)


def cmd_dead_letter_retry(args: argparse.Namespace, channel: grpc.Channel) -> int:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    resp = stub.RetryDeadLettered(
        apb.RetryDeadLetteredRequest(namespace=args.namespace, job_id=args.job, queue=args.queue),
        timeout=TIMEOUT_S,
    )
    return _emit(args, resp, lambda: print(f"retried {resp.retried} job(s)"))


def cmd_purge(args: argparse.Namespace, channel: grpc.Channel) -> int:
    if not args.yes:
        print("nothing deleted: add --yes to purge", file=sys.stderr)
        return 2
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    resp = stub.PurgeQueue(
        apb.PurgeQueueRequest(
            namespace=args.namespace,
            queue=args.queue,
            states=[STATES[s] for s in (args.state or [])],
        ),
        timeout=TIMEOUT_S,
    )
    return _emit(args, resp, lambda: print(f"purged {resp.purged} job(s)"))


def cmd_workers(args: argparse.Namespace, channel: grpc.Channel) -> int:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    resp = stub.ListWorkers(apb.ListWorkersRequest(namespace=args.namespace), timeout=TIMEOUT_S)
    return _emit(
        args,
        resp,
        lambda: _print_table(
            ["WORKER", "LAST SEEN", "LEASES"],
            [[w.worker_id, _when(w.last_seen_time), w.leases_held] for w in resp.workers],
        ),
    )


def cmd_enqueue(args: argparse.Namespace, channel: grpc.Channel) -> int:
    stub = dispatcher_pb2_grpc.DispatcherServiceStub(channel)
    spec = jpb.JobSpec(
        queue=args.queue,
        type=args.type,
        payload=args.payload.encode(),
        content_type=args.content_type,
        priority=PRIORITIES[args.priority],
        max_attempts=args.max_attempts,
        idempotency_key=args.idempotency_key,
    )
    if args.delay:
        spec.delay.FromMilliseconds(int(args.delay * 1000))
    resp = stub.Enqueue(pb.EnqueueRequest(namespace=args.namespace, job=spec), timeout=TIMEOUT_S)
    return _emit(args, resp, lambda: print(f"{resp.job.id} {_state(resp.job.state)}"))


def cmd_pause(args: argparse.Namespace, channel: grpc.Channel) -> int:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    resp = stub.PauseQueue(
        apb.PauseQueueRequest(namespace=args.namespace, queue=args.queue), timeout=TIMEOUT_S
    )
    return _emit(args, resp, lambda: print(f"paused {args.queue}"))


def cmd_resume(args: argparse.Namespace, channel: grpc.Channel) -> int:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    resp = stub.ResumeQueue(
        apb.ResumeQueueRequest(namespace=args.namespace, queue=args.queue), timeout=TIMEOUT_S
    )
    return _emit(args, resp, lambda: print(f"resumed {args.queue}"))


LIMIT_FLAGS = {
    "max_depth": "max_depth",
    "max_concurrency": "max_concurrency",
    "rate": "rate_per_second",
    "burst": "burst",
    "key_max_concurrency": "key_max_concurrency",
    "key_rate": "key_rate_per_second",
    "key_burst": "key_burst",
}


def cmd_limits(args: argparse.Namespace, channel: grpc.Channel) -> int:
    given = {f: getattr(args, a) for a, f in LIMIT_FLAGS.items() if getattr(args, a) is not None}
    if not given:
        print("name at least one limit (see --help)", file=sys.stderr)
        return 2
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    request = apb.SetQueueLimitsRequest(namespace=args.namespace, queue=args.queue, **given)
    resp = stub.SetQueueLimits(request, timeout=TIMEOUT_S)
    summary = ", ".join(f"{k}={v}" for k, v in given.items())
    return _emit(args, resp, lambda: print(f"{args.queue}: {summary}"))


def cmd_cancel(args: argparse.Namespace, channel: grpc.Channel) -> int:
    stub = dispatcher_pb2_grpc.DispatcherServiceStub(channel)
    request = pb.CancelRequest(namespace=args.namespace, job_id=args.job_id, reason=args.reason)
    resp = stub.Cancel(request, timeout=TIMEOUT_S)
    note = " (cancel requested: its worker stops it)" if resp.job.cancel_requested else ""
    return _emit(args, resp, lambda: print(f"{resp.job.id} {_state(resp.job.state)}{note}"))


QUOTA_FLAGS = {
    "enqueue_rate": "enqueue_rate_per_second",
    "enqueue_burst": "enqueue_burst",
    "max_live_jobs": "max_live_jobs",
    "max_leases": "max_leases",
}


def cmd_quotas(args: argparse.Namespace, channel: grpc.Channel) -> int:
    given = {f: getattr(args, a) for a, f in QUOTA_FLAGS.items() if getattr(args, a) is not None}
    if not given:
        print("name at least one quota (see --help)", file=sys.stderr)
        return 2
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    request = apb.SetNamespaceQuotasRequest(namespace=args.namespace, **given)
    resp = stub.SetNamespaceQuotas(request, timeout=TIMEOUT_S)
    summary = ", ".join(f"{k}={v}" for k, v in given.items())
    return _emit(args, resp, lambda: print(f"{args.namespace or 'default'}: {summary}"))
