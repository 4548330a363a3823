"""Recurring schedules: their values, their ticks, the misfire policy and validation.

A schedule ticks on a 5-field cron expression, evaluated in an IANA time
zone, or on a fixed interval counted from its creation. Times are Unix
milliseconds, like everywhere else in the domain.

The misfire rule: a tick less than MISFIRE_GRACE_MS late fires normally. When
the oldest unfired tick is later than that (every replica was down, or the
database was), the schedule has misfired: CATCH_UP_LATEST fires one job, for
the latest tick that has passed, SKIP fires none; both continue with the first
tick after now.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, CroniterError, croniter

from dispatcher.domain import validation
from dispatcher.domain.errors import AlreadyExists, InvalidArgument, NotFound, ResourceExhausted
from dispatcher.domain.limits import DAY_MS, SECOND_MS, Limits
from dispatcher.domain.models import JobSpec

MISFIRE_GRACE_MS = 60 * SECOND_MS
MIN_INTERVAL_MS = SECOND_MS
MAX_INTERVAL_MS = 366 * DAY_MS
MAX_CRON_CHARS = 256
MAX_PER_NAMESPACE = 10_000
DEFAULT_TIMEZONE = "UTC"
# Metadata every fired job carries, beside the template's own.
META_SCHEDULE_ID = "dispatch.schedule_id"
META_SCHEDULE_TIME = "dispatch.schedule_time"

# croniter extensions whose values change from one evaluation to the next.
_RANDOM_CRON_RE = re.compile(r"\b[RH]\b")
_TZ_RE = re.compile(r"[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*")
# A stand-in id and tick of the same length as real ones, to validate a template
# with the metadata its jobs will carry.
_SAMPLE_ID = "0" * 26
_SAMPLE_TICK_MS = 1_800_000_000_000


class MisfirePolicy(StrEnum):
    """What happens to ticks missed while no replica could fire them (stored as text)."""

    CATCH_UP_LATEST = "catch_up_latest"
    SKIP = "skip"


class ScheduleNotFound(NotFound):
    reason = "SCHEDULE_NOT_FOUND"


class ScheduleExists(AlreadyExists):
    reason = "SCHEDULE_EXISTS"


class ScheduleLimit(ResourceExhausted):
    reason = "SCHEDULE_LIMIT"


@dataclass(frozen=True)
class ScheduleSpec:
    """What a client asks for, as received: not yet validated."""

    name: str
    template: JobSpec
    cron: str = ""
    interval_ms: int | None = None
    timezone: str = ""
    misfire_policy: MisfirePolicy = MisfirePolicy.CATCH_UP_LATEST


@dataclass(frozen=True)
class Schedule:
    """A schedule as recorded in the schedules table."""

    id: str
    namespace: str
    spec: ScheduleSpec
    created_ms: int
    next_fire_ms: int
    paused: bool = False
    last_fire_ms: int | None = None
    last_job_id: str = ""
    last_error: str = ""

    def same_definition(self, spec: ScheduleSpec) -> bool:
        """Whether `spec` (normalized) asks for exactly this schedule."""
        return self.spec == spec


@dataclass(frozen=True)
class Created:
    schedule: Schedule
    created: bool


@dataclass(frozen=True)
class Plan:
    """What one pass does with a due schedule: fire `fire_ms` (or nothing), then wait
    for `next_ms`."""

    fire_ms: int | None
    next_ms: int
    misfired: bool = False


# ---- ticks -----------------------------------------------------------------


def _zone(spec: ScheduleSpec) -> ZoneInfo:
    return ZoneInfo(spec.timezone or DEFAULT_TIMEZONE)


def _at(ms: int, zone: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(ms / 1000, zone)


def _ms(dt: datetime) -> int:
    return round(dt.timestamp() * 1000)


def next_after(spec: ScheduleSpec, anchor_ms: int, after_ms: int) -> int:
    """The first tick strictly after `after_ms` (interval ticks count from `anchor_ms`)."""
    if spec.interval_ms is not None:
        if after_ms < anchor_ms:
            return anchor_ms + spec.interval_ms
        return anchor_ms + ((after_ms - anchor_ms) // spec.interval_ms + 1) * spec.interval_ms
    zone = _zone(spec)
    return _ms(croniter(spec.cron, _at(after_ms, zone)).get_next(datetime))


def latest_at_or_before(spec: ScheduleSpec, anchor_ms: int, at_ms: int) -> int:
    """The last tick at or before `at_ms` (the caller knows one exists)."""
    if spec.interval_ms is not None:
        return anchor_ms + (at_ms - anchor_ms) // spec.interval_ms * spec.interval_ms
    zone = _zone(spec)
    # get_prev is strict; cron ticks fall on whole minutes, so 1 ms past `at_ms`
    # makes a tick exactly at `at_ms` count.
    return _ms(croniter(spec.cron, _at(at_ms + 1, zone)).get_prev(datetime))


def plan(schedule: Schedule, now_ms: int) -> Plan:
    """Decide what to do with a schedule whose next tick is due at `now_ms`."""
    due = schedule.next_fire_ms
    spec, anchor = schedule.spec, schedule.created_ms
    if now_ms - due <= MISFIRE_GRACE_MS:
        return Plan(due, next_after(spec, anchor, due))
    if spec.misfire_policy is MisfirePolicy.SKIP:
        return Plan(None, next_after(spec, anchor, now_ms), misfired=True)
    latest = latest_at_or_before(spec, anchor, now_ms)
    return Plan(latest, next_after(spec, anchor, latest), misfired=True)


def idempotency_key(schedule_id: str, tick_ms: int) -> str:
    return f"schedule:{schedule_id}:{tick_ms}"


def rfc3339(ms: int) -> str:
    return (
        datetime.fromtimestamp(ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def job_for_tick(schedule_id: str, template: JobSpec, tick_ms: int) -> JobSpec:
    """The job one tick enqueues: the template, keyed and labelled with its tick."""
    metadata = dict(template.metadata)
    metadata[META_SCHEDULE_ID] = schedule_id
    metadata[META_SCHEDULE_TIME] = rfc3339(tick_ms)
    return replace(
        template, metadata=metadata, idempotency_key=idempotency_key(schedule_id, tick_ms)
    )


# ---- validation --------------------------------------------------------------


def check_id(value: str, field: str = "schedule_id") -> None:
    if not validation.JOB_ID_RE.fullmatch(value):
        raise InvalidArgument.field(field, "must be a 26-character schedule id")


def normalize(spec: ScheduleSpec, limits: Limits, prefix: str = "schedule") -> ScheduleSpec:
    """Validate a spec; returns it with defaults filled in, or raises InvalidArgument
    listing every bad field."""
    out = validation.Violations()
    validation.check_name(spec.name, f"{prefix}.name", out)
    spec = replace(spec, timezone=spec.timezone or DEFAULT_TIMEZONE)
    _check_timezone(out, spec.timezone, f"{prefix}.timezone")
    if spec.interval_ms is not None:
        if spec.cron:
            out.add(f"{prefix}.cron", "set a cron expression or an interval, not both")
        validation.check_duration(
            out, f"{prefix}.interval", spec.interval_ms, MIN_INTERVAL_MS, MAX_INTERVAL_MS
        )
    elif not spec.cron:
        out.add(f"{prefix}.cron", "set a cron expression or an interval")
    elif not out.items:
        _check_cron(out, spec, f"{prefix}.cron")
    _check_template(out, spec.template, limits, f"{prefix}.job_template")
    out.raise_if_any()
    return spec


def _check_timezone(out: validation.Violations, name: str, field: str) -> None:
    # The charset check first: ZoneInfo reads files, so no path tricks reach it.
    if len(name) <= 64 and _TZ_RE.fullmatch(name) and ".." not in name:
        try:
            ZoneInfo(name)
            return
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    out.add(field, "must be an IANA time zone name such as UTC or Europe/Paris")


def _check_cron(out: validation.Violations, spec: ScheduleSpec, field: str) -> None:
    expr = spec.cron
    if len(expr) > MAX_CRON_CHARS or len(expr.split()) != 5 or not expr.isascii():
        out.add(field, "must be a 5-field cron expression: minute hour day month weekday")
        return
    if _RANDOM_CRON_RE.search(expr.upper()):
        out.add(field, "must not use croniter's random (R) or hashed (H) values")
        return
    try:
        if not croniter.is_valid(expr):
            raise CroniterBadCronError(expr)
        next_after(spec, 0, _SAMPLE_TICK_MS)
    except CroniterBadDateError:
        out.add(field, "never matches a date")
    except (CroniterError, ValueError, KeyError, TypeError, OverflowError):
        out.add(field, "is not a valid cron expression")


def _check_template(
    out: validation.Violations, template: JobSpec, limits: Limits, prefix: str
) -> None:
    if template.idempotency_key:
        out.add(f"{prefix}.idempotency_key", "must be unset: each tick gets its own key")
    if template.run_at_ms is not None:
        out.add(f"{prefix}.run_at", "must be unset in a template (a delay is allowed)")
    if template.depends_on:
        out.add(f"{prefix}.depends_on", "must be unset in a template")
    # Validate the job as a tick will enqueue it, so that the metadata it adds counts.
    fired = job_for_tick(_SAMPLE_ID, replace(template, depends_on=[]), _SAMPLE_TICK_MS)
    try:
        validation.spec(replace(fired, run_at_ms=None), limits, prefix)
    except InvalidArgument as exc:
        out.items += [v for v in exc.violations if not v.field.endswith(".idempotency_key")]
