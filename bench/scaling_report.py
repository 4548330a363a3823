"""Tables for `bench.scaling`: per-operation cost by queue depth, memory, throughput.

Pure functions over the JSON-ready dict that bench.scaling builds, so that
tests can render synthetic numbers. Standard library only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bench.report import percentile

Row = Mapping[str, Any]


def op_stats(seconds: Sequence[float], calls: int, cpu_s: float | None) -> dict[str, float]:
    """Wall-clock p50/p99/mean of one operation in ms, and the server's CPU per call in µs."""
    if not calls:
        return {"calls": 0.0}
    ms = [s * 1000 for s in seconds]
    out = {
        "calls": float(calls),
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "mean_ms": sum(ms) / len(ms),
    }
    if cpu_s is not None:
        out["server_cpu_us"] = cpu_s / calls * 1e6
    return out


def growth(rows: Sequence[Row], get: Callable[[Row], float | None]) -> float | None:
    """The figure at the deepest queue divided by the figure at the shallowest one."""
    values = [(r["depth"], get(r)) for r in rows]
    known = sorted((d, v) for d, v in values if v is not None)
    if len(known) < 2 or known[0][1] <= 0:
        return None
    return known[-1][1] / known[0][1]


def _dig(row: Row, *path: str) -> float | None:
    cur: Any = row
    for part in path:
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    return float(cur)


def _num(v: float | None, digits: int = 2) -> str:
    if v is None:
        return "—"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def _ratio(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}x"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["--:"] * len(head)) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


COST_COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Enqueue p50 ms", ("grpc", "enqueue", "p50_ms")),
    ("Enqueue server CPU µs", ("grpc", "enqueue", "server_cpu_us")),
    ("Lease(1) p50 ms", ("grpc", "lease", "p50_ms")),
    ("Lease(1) server CPU µs", ("grpc", "lease", "server_cpu_us")),
    ("Ack(1) p50 ms", ("grpc", "ack", "p50_ms")),
    ("Empty Lease(1) answers", ("grpc", "lease_empty")),
    ("EnqueueBatch(100) µs/job", ("grpc", "enqueue_batch_us_per_job")),
    ("Lease+Ack(100) µs/job", ("grpc", "lease_ack_batch_us_per_job")),
    ("In-process enqueue ms", ("service", "enqueue", "p50_ms")),
    ("In-process lease ms", ("service", "lease", "p50_ms")),
    ("In-process ack ms", ("service", "ack", "p50_ms")),
)

MEMORY_COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Server RSS MB", ("server_rss_mb",)),
    ("Server peak RSS MB", ("server_peak_rss_mb",)),
    ("Redis B/job (MEMORY USAGE)", ("redis_bytes_per_job",)),
    ("Redis B/job (INFO delta)", ("redis_info_bytes_per_job",)),
    ("PostgreSQL B/job", ("sql_bytes_per_job",)),
    ("Fill jobs/s (in-process)", ("fill_per_s",)),
)


def _growth_of(rows: Sequence[Row], path: tuple[str, ...]) -> float | None:
    def get(row: Row) -> float | None:
        return _dig(row, *path)

    return growth(rows, get)


def _depth_table(rows: Sequence[Row], columns: Sequence[tuple[str, tuple[str, ...]]]) -> list[str]:
    body = [[f"{r['depth']:,}"] + [_num(_dig(r, *path)) for _, path in columns] for r in rows]
    body.append(["**deepest / shallowest**"] + [_ratio(_growth_of(rows, p)) for _, p in columns])
    return _table(["Ready jobs in the queue"] + [title for title, _ in columns], body)


def _throughput_table(data: Mapping[str, Any]) -> list[str]:
    rows = [
        [str(t["replicas"]), str(t["workers"]), _num(t.get("drain_per_s")), t.get("error", "")]
        for t in data.get("throughput", [])
    ]
    rows += [
        [
            str(c["replicas"]),
            f"{c['producers']} producers, single Enqueue calls",
            _num(c.get("enqueue_per_s")),
            c.get("error", ""),
        ]
        for c in data.get("concurrent_enqueue", [])
    ]
    return _table(["Replicas", "Worker processes", "Jobs/s", "Note"], rows)


def render_markdown(data: Mapping[str, Any]) -> str:
    meta = data.get("meta", {})
    out = ["# Dispatcher scaling", ""]
    out += [f"- {k.capitalize()}: {v}" for k, v in meta.items() if isinstance(v, str)]
    rows = data.get("depth", [])
    out += ["", "## Cost per operation by queue depth", ""]
    out += _depth_table(rows, COST_COLUMNS)
    out += [
        "",
        "gRPC figures are sequential calls from one client to one replica; server CPU is the "
        "replica process's user+system time per call. In-process figures call the service "
        "layer directly (no gRPC). The last row divides the deepest queue's figure by the "
        "shallowest's: flat (O(log n)) stays near 1. An empty Lease(1) answer, with jobs in "
        "the queue, means the job it picked was stale in the index (see bench/README.md). "
        "Each depth is measured after `VACUUM (ANALYZE)` of `runs` and `run_events`, so that "
        "autovacuum, which a large fill sets off, does not run inside the measurements.",
        "",
        "## Memory by queue depth",
        "",
    ]
    out += _depth_table(rows, MEMORY_COLUMNS)
    out += ["", "## Throughput (drain of N queued jobs; concurrent producers)", ""]
    out += _throughput_table(data)
    errors = data.get("errors", [])
    if errors:
        out += ["", "Errors:", ""] + [f"- {e}" for e in errors]
    return "\n".join(out) + "\n"
