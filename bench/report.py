"""The results table: best peer per figure, our ratios, Markdown and JSON.

Pure functions over plain data, so that tests can run them on synthetic
numbers. Standard library only.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

NO_BATCH_API = "no batch API"
NOT_MEASURED = "not measured for this system"


@dataclass(frozen=True)
class Metric:
    key: str
    title: str
    unit: str
    higher_is_better: bool
    # The peers' figure this one is judged against, when peers have none of their
    # own (concurrent enqueue is compared with the best single-call enqueue).
    versus: str = ""


METRICS: tuple[Metric, ...] = (
    Metric("enqueue_single_per_s", "Enqueue, 1 per call", "jobs/s", True),
    Metric(
        "enqueue_concurrent_per_s",
        "Enqueue, concurrent callers",
        "jobs/s",
        True,
        versus="enqueue_single_per_s",
    ),
    Metric("enqueue_batch_per_s", "Enqueue, batch API", "jobs/s", True),
    Metric("drain_per_s", "Drain", "jobs/s", True),
    Metric("latency_p50_ms", "Latency p50", "ms", False),
    Metric("latency_p99_ms", "Latency p99", "ms", False),
)
METRIC_KEYS = tuple(m.key for m in METRICS)


@dataclass
class SystemResult:
    """What one system's measurement produced.

    `metrics` holds the figures that were measured; `missing` says why any
    other figure is absent (NO_BATCH_API, or a failure); `error` is set when
    the whole measurement failed. `details` carries the rest (versions, drain
    seconds, counts) into the JSON.
    """

    name: str
    kind: str  # "peer", "ours" or "reference"
    workers: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Best:
    name: str
    value: float


@dataclass
class Report:
    meta: dict[str, Any]
    systems: list[SystemResult]
    best: dict[str, Best | None]
    ratios: dict[str, dict[str, float]]  # our system -> metric -> ours / best peer
    vs_echo: dict[str, float]  # our system -> single enqueue rate / echo call rate
    # With several rounds: our system -> metric -> its ratio in each round (None:
    # not measured in that round).
    round_ratios: dict[str, dict[str, list[float | None]]] = field(default_factory=dict)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sequence."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def best_peers(systems: Iterable[SystemResult]) -> dict[str, Best | None]:
    """The best measured peer for each figure: highest rate, lowest latency."""
    best: dict[str, Best | None] = {}
    peers = [s for s in systems if s.kind == "peer"]
    for m in METRICS:
        key = m.versus or m.key
        found = [Best(s.name, s.metrics[key]) for s in peers if key in s.metrics]
        if not found:
            best[m.key] = None
            continue
        pick = max if m.higher_is_better else min
        best[m.key] = pick(found, key=lambda b: b.value)
    return best


def ratios(
    systems: Iterable[SystemResult], best: Mapping[str, Best | None]
) -> dict[str, dict[str, float]]:
    """Ours ÷ best peer, per figure both have (rates: >1 is better; latency: <1 is better)."""
    out: dict[str, dict[str, float]] = {}
    for s in systems:
        if s.kind != "ours":
            continue
        row: dict[str, float] = {}
        for key, value in s.metrics.items():
            b = best.get(key)
            if b is not None and b.value > 0:
                row[key] = value / b.value
        out[s.name] = row
    return out


def versus_echo(systems: Sequence[SystemResult]) -> dict[str, float]:
    echo = next((s for s in systems if s.kind == "reference"), None)
    base = echo.metrics.get("enqueue_single_per_s") if echo else None
    if not base:
        return {}
    return {
        s.name: s.metrics["enqueue_single_per_s"] / base
        for s in systems
        if s.kind == "ours" and "enqueue_single_per_s" in s.metrics
    }


def build_report(
    systems: Sequence[SystemResult],
    meta: Mapping[str, Any],
    rounds: Sequence[Sequence[SystemResult]] = (),
) -> Report:
    """The report of `systems`; given the `rounds` they were combined from, also
    each round's ratios, each against the best peer of the same round."""
    best = best_peers(systems)
    report = Report(dict(meta), list(systems), best, ratios(systems, best), versus_echo(systems))
    if len(rounds) > 1:
        per_round = [ratios(r, best_peers(r)) for r in rounds]
        for name, row in report.ratios.items():
            keys = {k for one in per_round for k in one.get(name, {})} | set(row)
            report.round_ratios[name] = {
                k: [one.get(name, {}).get(k) for one in per_round] for k in METRIC_KEYS if k in keys
            }
    return report


def combine_rounds(rounds: Sequence[Sequence[SystemResult]]) -> list[SystemResult]:
    """One result per system from several rounds of the same systems, in the first
    round's order: each figure is the median of the rounds that measured it, and
    so is each part of the CPU per drained job. `details["rounds"]` keeps every
    round's figures; a figure no round measured keeps the first round's reason;
    the system failed only if it failed in every round."""
    by_name: dict[str, list[SystemResult]] = {}
    for one in rounds:
        for s in one:
            by_name.setdefault(s.name, []).append(s)
    out = []
    for name, runs in by_name.items():
        first = runs[0]
        metrics = {
            k: statistics.median(values)
            for k in METRIC_KEYS
            if (values := [r.metrics[k] for r in runs if k in r.metrics])
        }
        missing = {k: why for k, why in first.missing.items() if k not in metrics}
        details = dict(first.details)
        details["rounds"] = [
            {"metrics": r.metrics, "error": r.error, "details": r.details} for r in runs
        ]
        cpu = [
            r.details["drain_cpu_us_per_job"] for r in runs if r.details.get("drain_cpu_us_per_job")
        ]
        if cpu:
            parts = {k for one in cpu for k in one}
            details["drain_cpu_us_per_job"] = {
                k: statistics.median([one[k] for one in cpu if k in one]) for k in sorted(parts)
            }
        errors = [r.error for r in runs]
        error = first.error if all(errors) else None
        out.append(SystemResult(name, first.kind, first.workers, metrics, missing, error, details))
    return out


# -- formatting -------------------------------------------------------------


def fmt_value(metric: Metric, value: float) -> str:
    if metric.unit == "ms":
        return f"{value:.1f}" if value < 100 else f"{value:,.0f}"
    return f"{value:,.0f}"


def fmt_ratio(r: float) -> str:
    return f"{r:.2f}x" if r < 10 else f"{r:.1f}x"


class _Footnotes:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, text: str) -> int:
        self.lines.append(text)
        return len(self.lines)


def _cell(s: SystemResult, m: Metric, report: Report, notes: _Footnotes) -> str:
    if m.key in s.metrics:
        text = fmt_value(m, s.metrics[m.key])
        r = report.ratios.get(s.name, {}).get(m.key)
        return f"{text} ({fmt_ratio(r)})" if r is not None else text
    reason = s.missing.get(m.key) or s.error
    if reason is None or reason in (NO_BATCH_API, NOT_MEASURED) or s.kind == "reference":
        return "—"
    if s.error and reason == s.error:
        return "failed"
    return f"failed [{notes.add(f'{s.name}, {m.title}: {reason}')}]"


def _best_cell(m: Metric, report: Report) -> str:
    b = report.best.get(m.key)
    if b is None:
        return "—"
    versus = next((v.title for v in METRICS if v.key == m.versus), "")
    return f"{fmt_value(m, b.value)} ({b.name}{', ' + versus.lower() if versus else ''})"


def render_table(report: Report) -> tuple[list[str], list[str]]:
    """The Markdown table lines and its footnotes."""
    notes = _Footnotes()
    head = ["System", "Workers"] + [f"{m.title} ({m.unit})" for m in METRICS]
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---", "---"] + ["--:"] * len(METRICS)) + "|",
    ]

    def row(cells: list[str]) -> None:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")

    order = {"peer": 0, "ours": 2, "reference": 3}
    ranked = sorted(report.systems, key=lambda s: order.get(s.kind, 4))
    best_done = False
    for s in ranked:
        if s.kind != "peer" and not best_done:
            row(["**best peer**", ""] + [_best_cell(m, report) for m in METRICS])
            best_done = True
        name = s.name if s.kind == "peer" else f"**{s.name}**"
        if s.error:
            notes.add(f"{s.name}: {s.error}")
            name += f" [{len(notes.lines)}]"
        row([name, s.workers] + [_cell(s, m, report, notes) for m in METRICS])
    if not best_done:
        row(["**best peer**", ""] + [_best_cell(m, report) for m in METRICS])
    return lines, notes.lines


def _meta_lines(meta: Mapping[str, Any]) -> list[str]:
    labels = [
        ("date", "Date"),
        ("command", "Command"),
        ("machine", "Machine"),
        ("python", "Python"),
        ("load", "Load average (1, 5, 15 min)"),
        ("parameters", "Parameters"),
    ]
    return [f"- {title}: {meta[k]}" for k, title in labels if meta.get(k)]


CPU_PARTS = (("workers", "Workers"), ("redis", "Redis"), ("server", "Server"),
             ("postgresql", "PostgreSQL"))  # fmt: skip


def render_cpu_table(report: Report) -> list[str]:
    """CPU microseconds per drained job by part of each system that recorded them
    (bench.measure's `drain_cpu_us_per_job`); empty when none did."""
    measured = [s for s in report.systems if s.details.get("drain_cpu_us_per_job")]
    if not measured:
        return []
    lines = [
        "| System | " + " | ".join(title for _, title in CPU_PARTS) + " | All |",
        "|---|" + "--:|" * (len(CPU_PARTS) + 1),
    ]
    for s in measured:
        parts = s.details["drain_cpu_us_per_job"]
        cells = [f"{parts[k]:,.0f}" if k in parts else "—" for k, _ in CPU_PARTS]
        name = s.name if s.kind == "peer" else f"**{s.name}**"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {sum(parts.values()):,.0f} |")
    return lines


def render_round_ratios(report: Report) -> list[str]:
    """Each of our figures' ratio in each round, then their median; empty with one round."""
    if not report.round_ratios:
        return []
    shown = [m for m in METRICS if any(m.key in row for row in report.round_ratios.values())]
    lines = [
        "| System | " + " | ".join(m.title for m in shown) + " |",
        "|---|" + "--:|" * len(shown),
    ]
    for name, row in report.round_ratios.items():
        cells = []
        for m in shown:
            values = row.get(m.key, [])
            measured = [v for v in values if v is not None]
            if not measured:
                cells.append("—")
                continue
            each = " / ".join("—" if v is None else f"{v:.2f}" for v in values)
            cells.append(f"{each} (median {fmt_ratio(statistics.median(measured))})")
        lines.append(f"| **{name}** | " + " | ".join(cells) + " |")
    return lines


def render_markdown(report: Report) -> str:
    table, notes = render_table(report)
    out = ["# Dispatcher benchmark", "", *_meta_lines(report.meta), "", *table, ""]
    out.append(
        "x is ours / the best peer: for rates above 1 is better, for latencies below 1 is "
        "better. — means the system has no batch API (or the figure does not apply). "
        "Concurrent callers: many producer tasks in one process, each awaiting one job at "
        "a time; it is measured for our client only (which coalesces such calls) and "
        "compared with the best peer's one-per-call rate."
    )
    if report.vs_echo:
        shares = ", ".join(f"{k} {v:.0%}" for k, v in report.vs_echo.items())
        out += ["", f"Single-call enqueue as a share of the bare gRPC echo rate: {shares}."]
    if any(s.kind == "reference" and "latency_p50_ms" in s.metrics for s in report.systems):
        out += [
            "",
            "The echo's latency is one bare call's round trip, the calls spaced as the "
            "latency phase's enqueues: the floor under an enqueue-to-start that takes one "
            "call per job.",
        ]
    per_round = render_round_ratios(report)
    if per_round:
        out += [
            "",
            f"Figures above are medians of {report.meta.get('rounds', 'several')} rounds, "
            "each round running every system once, in the opposite order to the round "
            "before. Ours ÷ the best peer of the same round, in each round:",
            "",
            *per_round,
        ]
    cpu = render_cpu_table(report)
    if cpu:
        out += [
            "",
            "CPU per drained job (µs), from the first job's start to the last one's end: "
            "the worker processes with their children, the Redis server (all of it), and "
            "the dispatcher's server process and PostgreSQL backends. The benchmark's "
            "handler, one Redis pipeline per job, is part of every system's workers.",
            "",
            *cpu,
        ]
    if notes:
        out += ["", "Failures:", ""] + [f"{i}. {t}" for i, t in enumerate(notes, 1)]
    versions = report.meta.get("versions") or {}
    if versions:
        out += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))]
    return "\n".join(out) + "\n"


def report_json(report: Report) -> dict[str, Any]:
    """A JSON-ready dict: meta, metric definitions, systems, best peer, ratios."""
    return {
        "meta": report.meta,
        "metrics": [asdict(m) for m in METRICS],
        "systems": [asdict(s) for s in report.systems],
        "best_peer": {k: (asdict(b) if b else None) for k, b in report.best.items()},
        "ratios": report.ratios,
        "vs_echo": report.vs_echo,
        "round_ratios": report.round_ratios,
    }


def result_from_dict(d: Mapping[str, Any]) -> SystemResult:
    """Rebuild a SystemResult from its JSON form (what bench.measure writes)."""
    return SystemResult(
        name=d["name"],
        kind=d["kind"],
        workers=d.get("workers", ""),
        metrics={k: float(v) for k, v in d.get("metrics", {}).items()},
        missing=dict(d.get("missing", {})),
        error=d.get("error"),
        details=dict(d.get("details", {})),
    )
