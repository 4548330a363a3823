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


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds of the process and of its reaped children)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name may hold spaces and parentheses: fields follow the last ")".
    fields = raw.rsplit(")", 1)[1].split()
    ppid = int(fields[1])
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return ppid, (utime + stime + cutime + cstime) / _TICK


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


def redis_cpu_s(info: Mapping[str, object]) -> float:
    """CPU seconds of a Redis server from its INFO cpu section."""
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])  # type: ignore[arg-type]


def per_job_us(
    before: Mapping[str, float], after: Mapping[str, float], jobs: int
) -> dict[str, float]:
    """Microseconds of CPU per job for each part measured at both ends."""
    return {k: (after[k] - before[k]) * 1e6 / jobs for k in after if k in before and jobs > 0}
