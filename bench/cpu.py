"""CPU time of the processes a system runs on, for the drain's cost per job.

Rates on a shared 2-core VM swing with the machine's speed; the CPU each
process spends per job says where a system's time goes, and the same for
every system: its worker processes (with their children: Huey, Celery
prefork and Dramatiq fork), the Redis server, and for the dispatcher its
server process and PostgreSQL's backends. Linux only (/proc); standard
library only, as bench.probe.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _times(pid: int) -> tuple[int, float, float] | None:
    """(parent pid, the process's own CPU seconds, its reaped children's)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name may hold spaces and parentheses: fields follow the last ")".
    fields = raw.rsplit(")", 1)[1].split()
    ppid = int(fields[1])
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return ppid, (utime + stime) / _TICK, (cutime + cstime) / _TICK


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds of the process and of its reaped children)."""
    t = _times(pid)
    return None if t is None else (t[0], t[1] + t[2])


def _children_by_parent() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None:
                out.setdefault(st[0], []).append(int(entry.name))
    return out


def tree_cpu_s(pids: Iterable[int]) -> float:
    """CPU seconds used so far by these processes and all their descendants:
    the live ones read one by one, the exited ones through their parent's
    reaped-children counters."""
    children = _children_by_parent()
    total, todo, seen = 0.0, list(pids), set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        st = _stat(pid)
        if st is not None:
            total += st[1]
            todo += children.get(pid, [])
    return total


def backends_cpu_s(pids: Iterable[int]) -> float:
    """CPU seconds used so far by these PostgreSQL backends, plus what every
    backend that has exited spent: PostgreSQL's postmaster, their parent, holds
    that in its reaped-children counters. Read at both ends of a span, the
    difference is what the backends spent in it, those that came and went
    included: the dispatcher's pool replaces its connections every 30 s
    (`dispatcher.store.sql.engine.STATEMENT_LIFETIME_S`). It also counts any
    other backend of that PostgreSQL server that exited in the span, the
    harness's own short connections among them (a few ms each)."""
    pids = list(pids)
    parents = {t[0] for t in map(_times, pids) if t is not None}
    return tree_cpu_s(pids) + sum(t[2] for t in map(_times, parents) if t is not None)


def redis_cpu_s(info: Mapping[str, object]) -> float:
    """CPU seconds of a Redis server from its INFO cpu section."""
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])  # type: ignore[arg-type]


def per_job_us(
    before: Mapping[str, float], after: Mapping[str, float], jobs: int
) -> dict[str, float]:
    """Microseconds of CPU per job for each part measured at both ends."""
    return {k: (after[k] - before[k]) * 1e6 / jobs for k in after if k in before and jobs > 0}
