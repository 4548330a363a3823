"""`dispatcher schedules ...`: recurring schedules over the ScheduleService.

Registered by `cli_admin.add_commands`, with the same connection flags
(--address, --namespace, --token, --tls-ca, --json).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import grpc

from dispatcher.cli_admin import PRIORITIES, TIMEOUT_S, _emit, _print_table, _when
from worker_sdk._proto.dispatch.v1 import job_pb2 as jpb
from worker_sdk._proto.dispatch.v1 import schedule_pb2 as spb
from worker_sdk._proto.dispatch.v1 import schedule_pb2_grpc

MISFIRE = {
    "catch-up-latest": spb.MISFIRE_POLICY_CATCH_UP_LATEST,
    "skip": spb.MISFIRE_POLICY_SKIP,
}


def add_commands(sub: Any, common: Callable[[argparse.ArgumentParser], Any]) -> None:
    """Register `schedules create|list|show|pause|resume|delete`."""
    cmds = sub.add_parser("schedules", help="recurring schedules").add_subparsers(
        dest="schedules_cmd", required=True
    )
    p = common(cmds.add_parser("create", help="create a schedule (again: harmless if identical)"))
    p.add_argument("name", help="unique in the namespace")
    cadence = p.add_mutually_exclusive_group(required=True)
    cadence.add_argument("--cron", help='5-field cron expression, e.g. "0 3 * * *"')
    cadence.add_argument("--every", type=float, help="fixed interval in seconds")
    p.add_argument("--timezone", default="", help="IANA zone of --cron (default UTC)")
    p.add_argument(
        "--misfire",
        choices=sorted(MISFIRE),
        default="catch-up-latest",
        help="ticks missed while every replica was down: fire the latest once, or none",
    )
    p.add_argument("--queue", required=True)
    p.add_argument("--type", required=True)
    p.add_argument("--payload", default="", help="payload text (sent as UTF-8 bytes)")
    p.add_argument("--content-type", default="")
    p.add_argument("--priority", choices=sorted(PRIORITIES), default="default")
    p.add_argument("--max-attempts", type=int, default=0)
    p.add_argument(
        "--metadata", action="append", default=[], metavar="KEY=VALUE", help="repeatable"
    )
    p.set_defaults(run=cmd_create)
    p = common(cmds.add_parser("list", help="list the schedules of a namespace"))
    p.set_defaults(run=cmd_list)
    for name, help_, run in [
        ("show", "show one schedule", cmd_show),
        ("pause", "stop firing a schedule", cmd_pause),
        ("resume", "fire a paused schedule again, from its next tick", cmd_resume),
        ("delete", "delete a schedule (its jobs stay)", cmd_delete),
    ]:
        p = common(cmds.add_parser(name, help=help_))
        p.add_argument("schedule_id")
        p.set_defaults(run=run)


def _stub(channel: grpc.Channel) -> schedule_pb2_grpc.ScheduleServiceStub:
    return schedule_pb2_grpc.ScheduleServiceStub(channel)


def _cadence(x: spb.Schedule) -> str:
    if x.WhichOneof("cadence") == "interval":
        return f"every {x.interval.ToTimedelta().total_seconds():g}s"
    return f"{x.cron} ({x.timezone})"


def _row(x: spb.Schedule) -> list[object]:
    return [
        x.id,
        x.name,
        _cadence(x),
        "paused" if x.paused else _when(x.next_fire_time),
        _when(x.last_fire_time),
        x.last_error[:40] or "-",
    ]


HEADERS = ["ID", "NAME", "CADENCE", "NEXT", "LAST", "LAST ERROR"]


def cmd_create(args: argparse.Namespace, channel: grpc.Channel) -> int:
    metadata = dict(m.partition("=")[::2] for m in args.metadata)
    schedule = spb.Schedule(
        name=args.name,
        timezone=args.timezone,
        misfire_policy=MISFIRE[args.misfire],
        job_template=jpb.JobSpec(
            queue=args.queue,
            type=args.type,
            payload=args.payload.encode(),
            content_type=args.content_type,
            priority=PRIORITIES[args.priority],
            max_attempts=args.max_attempts,
            metadata=metadata,
        ),
    )
    if args.cron is not None:
        schedule.cron = args.cron
    else:
        schedule.interval.FromMilliseconds(round(args.every * 1000))
    request = spb.CreateScheduleRequest(namespace=args.namespace, schedule=schedule)
    resp = _stub(channel).CreateSchedule(request, timeout=TIMEOUT_S)
    x = resp.schedule
    verb = "created" if resp.created else "exists"
    return _emit(
        args, resp, lambda: print(f"{verb} {x.id} {x.name}, next {_when(x.next_fire_time)}")
    )


def cmd_list(args: argparse.Namespace, channel: grpc.Channel) -> int:
    found: list[spb.Schedule] = []
    token = ""
    while True:
        request = spb.ListSchedulesRequest(namespace=args.namespace, page_token=token)
        resp = _stub(channel).ListSchedules(request, timeout=TIMEOUT_S)
        found += list(resp.schedules)
        token = resp.next_page_token
        if not token:
            break
    out = spb.ListSchedulesResponse(schedules=found)
    return _emit(args, out, lambda: _print_table(HEADERS, [_row(x) for x in found]))


def cmd_show(args: argparse.Namespace, channel: grpc.Channel) -> int:
    request = spb.GetScheduleRequest(namespace=args.namespace, schedule_id=args.schedule_id)
    x = _stub(channel).GetSchedule(request, timeout=TIMEOUT_S).schedule

    def table() -> None:
        t = x.job_template
        rows: list[list[object]] = [
            ["id", x.id],
            ["name", x.name],
            ["cadence", _cadence(x)],
            ["misfire", spb.MisfirePolicy.Name(x.misfire_policy)],
            ["paused", x.paused],
            ["next fire", _when(x.next_fire_time)],
            ["last fire", _when(x.last_fire_time)],
            ["last job", x.last_job_id or "-"],
            ["last error", x.last_error or "-"],
            ["job", f"{t.queue} / {t.type}"],
            ["created", _when(x.create_time)],
        ]
        _print_table(["FIELD", "VALUE"], rows)

    return _emit(args, x, table)


def cmd_pause(args: argparse.Namespace, channel: grpc.Channel) -> int:
    request = spb.PauseScheduleRequest(namespace=args.namespace, schedule_id=args.schedule_id)
    resp = _stub(channel).PauseSchedule(request, timeout=TIMEOUT_S)
    return _emit(args, resp, lambda: print(f"paused {resp.schedule.name}"))


def cmd_resume(args: argparse.Namespace, channel: grpc.Channel) -> int:
    request = spb.ResumeScheduleRequest(namespace=args.namespace, schedule_id=args.schedule_id)
    resp = _stub(channel).ResumeSchedule(request, timeout=TIMEOUT_S)
    x = resp.schedule
    return _emit(args, resp, lambda: print(f"resumed {x.name}, next {_when(x.next_fire_time)}"))


def cmd_delete(args: argparse.Namespace, channel: grpc.Channel) -> int:
    request = spb.DeleteScheduleRequest(namespace=args.namespace, schedule_id=args.schedule_id)
    resp = _stub(channel).DeleteSchedule(request, timeout=TIMEOUT_S)
    return _emit(args, resp, lambda: print(f"deleted {args.schedule_id}"))
