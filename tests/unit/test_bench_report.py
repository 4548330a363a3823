"""The benchmark's pure parts: percentiles, best peer, ratios, rendering, system selection.

No benchmark runs here (bench.run and bench.scaling are commands, not tests),
and nothing is timed: the numbers are synthetic.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import pytest

from bench.peers import SYSTEMS, select
from bench.report import (
    NO_BATCH_API,
    NOT_MEASURED,
    SystemResult,
    best_peers,
    build_report,
    combine_rounds,
    fmt_ratio,
    percentile,
    ratios,
    render_cpu_table,
    render_markdown,
    report_json,
    result_from_dict,
    versus_echo,
)
from bench.scaling_report import growth, op_stats
from bench.scaling_report import render_markdown as render_scaling


def peer(name: str, **metrics: float) -> SystemResult:
    return SystemResult(name, "peer", "2 workers", metrics=dict(metrics))


def ours(name: str, **metrics: float) -> SystemResult:
    return SystemResult(name, "ours", "2 workers", metrics=dict(metrics))


def echo(rate: float) -> SystemResult:
    return SystemResult("grpc-echo", "reference", "", metrics={"enqueue_single_per_s": rate})


SYSTEMS_FIXTURE = [
    peer("huey", enqueue_single_per_s=5000, drain_per_s=3000, latency_p50_ms=1.0),
    peer("rq", enqueue_single_per_s=1500, enqueue_batch_per_s=12000, drain_per_s=450),
    ours("disp", enqueue_single_per_s=1000, enqueue_batch_per_s=24000, drain_per_s=6000),
    echo(2000),
]
SYSTEMS_FIXTURE[1].metrics["latency_p50_ms"] = 4.0
SYSTEMS_FIXTURE[2].metrics["latency_p50_ms"] = 0.5


# -- percentile ------------------------------------------------------------------


def test_percentile_is_nearest_rank_on_sorted_values() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # 100..1, unsorted on purpose
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile(values, 0) == 1


def test_percentile_of_200_samples_p99_is_the_198th_value() -> None:
    values = [float(v) for v in range(1, 201)]
    assert percentile(values, 99) == 198
    assert percentile(values, 50) == 100


def test_percentile_of_one_value_is_that_value() -> None:
    assert percentile([7.5], 50) == 7.5
    assert percentile([7.5], 99) == 7.5


def test_percentile_of_nothing_raises() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)


# -- best peer and ratios -------------------------------------------------------------


def test_best_peer_is_the_highest_rate_and_the_lowest_latency_among_peers_only() -> None:
    best = best_peers(SYSTEMS_FIXTURE)
    assert best["enqueue_single_per_s"] is not None
    assert best["enqueue_single_per_s"].name == "huey"
    assert best["drain_per_s"] is not None and best["drain_per_s"].value == 3000
    assert best["latency_p50_ms"] is not None and best["latency_p50_ms"].name == "huey"
    assert best["enqueue_batch_per_s"] is not None and best["enqueue_batch_per_s"].name == "rq"


def test_a_figure_no_peer_measured_has_no_best() -> None:
    assert best_peers(SYSTEMS_FIXTURE)["latency_p99_ms"] is None


def test_ratios_divide_ours_by_the_best_peer() -> None:
    r = ratios(SYSTEMS_FIXTURE, best_peers(SYSTEMS_FIXTURE))
    assert set(r) == {"disp"}
    assert r["disp"]["drain_per_s"] == pytest.approx(2.0)
    assert r["disp"]["enqueue_batch_per_s"] == pytest.approx(2.0)
    assert r["disp"]["enqueue_single_per_s"] == pytest.approx(0.2)
    assert r["disp"]["latency_p50_ms"] == pytest.approx(0.5)  # below 1: lower latency


def test_ratios_skip_a_figure_whose_best_is_zero_or_missing() -> None:
    systems = [peer("p", drain_per_s=0.0), ours("o", drain_per_s=10.0, latency_p99_ms=1.0)]
    assert ratios(systems, best_peers(systems)) == {"o": {}}


def test_single_enqueue_is_compared_with_the_echo() -> None:
    assert versus_echo(SYSTEMS_FIXTURE) == {"disp": pytest.approx(0.5)}
    assert versus_echo([ours("o", enqueue_single_per_s=1.0)]) == {}


def test_concurrent_enqueue_is_judged_against_the_best_peers_one_per_call_rate() -> None:
    # Peers have no coalescing client, so the target is their sequential rate.
    systems = [*SYSTEMS_FIXTURE, ours("coalesced", enqueue_concurrent_per_s=7500)]
    report = build_report(systems, {})
    assert report.best["enqueue_concurrent_per_s"] == report.best["enqueue_single_per_s"]
    assert report.ratios["coalesced"]["enqueue_concurrent_per_s"] == pytest.approx(1.5)
    best_row = next(ln for ln in render_markdown(report).splitlines() if "**best peer**" in ln)
    assert "5,000 (huey, enqueue, 1 per call)" in best_row


def test_ratio_format_keeps_two_decimals_below_ten() -> None:
    assert fmt_ratio(0.234) == "0.23x"
    assert fmt_ratio(12.34) == "12.3x"


# -- rendering ------------------------------------------------------------------------


def test_markdown_has_one_row_per_system_the_best_peer_row_and_ratios() -> None:
    md = render_markdown(build_report(SYSTEMS_FIXTURE, {"date": "today"}))
    lines = md.splitlines()
    assert "- Date: today" in lines
    rows = [ln for ln in lines if ln.startswith("| ")]
    assert len(rows) == 1 + 4 + 1  # header, four systems, best peer
    disp = next(ln for ln in rows if "**disp**" in ln)
    assert "6,000 (2.00x)" in disp
    assert "0.5 (0.50x)" in disp
    best = next(ln for ln in rows if "**best peer**" in ln)
    assert "3,000 (huey)" in best
    assert "Single-call enqueue as a share of the bare gRPC echo rate: disp 50%." in md


def test_peers_are_listed_before_ours_and_the_reference_last() -> None:
    shuffled = [SYSTEMS_FIXTURE[3], SYSTEMS_FIXTURE[2], SYSTEMS_FIXTURE[0], SYSTEMS_FIXTURE[1]]
    rows = [ln for ln in render_markdown(build_report(shuffled, {})).splitlines()[2:]]
    names = [ln.split("|")[1].strip() for ln in rows if ln.startswith("| ")][1:]
    assert names == ["huey", "rq", "**best peer**", "**disp**", "**grpc-echo**"]


def test_no_batch_api_shows_a_dash_and_a_failure_gets_a_footnote() -> None:
    slow = peer("slow", enqueue_single_per_s=10)
    slow.missing = {
        "enqueue_concurrent_per_s": NOT_MEASURED,
        "enqueue_batch_per_s": NO_BATCH_API,
        "drain_per_s": "timeout after 60s",
    }
    broken = SystemResult("broken", "peer", "", error="RuntimeError: no arq")
    md = render_markdown(build_report([slow, broken], {}))
    row = next(ln for ln in md.splitlines() if ln.startswith("| slow"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3] == "—"  # concurrent callers: not measured for peers
    assert cells[4] == "—"  # batch
    assert cells[5] == "failed [1]"  # drain, with its footnote
    assert "1. slow, Drain: timeout after 60s" in md
    assert "2. broken: RuntimeError: no arq" in md


def test_a_pipe_in_a_cell_does_not_break_the_table() -> None:
    md = render_markdown(build_report([SystemResult("a|b", "peer", "x|y")], {}))
    assert "| a\\|b | x\\|y |" in md


def test_json_round_trips_through_result_from_dict() -> None:
    report = build_report(SYSTEMS_FIXTURE, {"date": "today"})
    data = json.loads(json.dumps(report_json(report)))
    assert [result_from_dict(s) for s in data["systems"]] == SYSTEMS_FIXTURE
    assert data["best_peer"]["drain_per_s"] == {"name": "huey", "value": 3000}
    assert data["ratios"]["disp"]["drain_per_s"] == pytest.approx(2.0)
    assert result_from_dict(asdict(SYSTEMS_FIXTURE[0])) == SYSTEMS_FIXTURE[0]


# -- system selection -------------------------------------------------------------------


def test_every_system_with_a_redis_database_has_its_own() -> None:
    dbs = [s.redis_db for s in SYSTEMS if s.redis_db is not None]
    assert len(dbs) == len(set(dbs))
    assert 0 not in dbs  # the test suite's database


def test_select_takes_names_and_prefixes_and_keeps_table_order() -> None:
    names = [s.name for s in select("grpc-echo,rq-*", "rq-fork")]
    assert names == ["rq-simple", "grpc-echo"]
    assert len(select()) == len(SYSTEMS)


def test_select_refuses_an_unknown_name() -> None:
    with pytest.raises(ValueError, match="unknown system"):
        select("rq-simpel")


# -- scaling tables -----------------------------------------------------------------------


def test_op_stats_reports_milliseconds_and_server_cpu_per_call() -> None:
    stats = op_stats([0.001, 0.002, 0.003, 0.004], 4, cpu_s=0.002)
    assert stats["p50_ms"] == pytest.approx(2.0)
    assert stats["p99_ms"] == pytest.approx(4.0)
    assert stats["mean_ms"] == pytest.approx(2.5)
    assert stats["server_cpu_us"] == pytest.approx(500.0)
    assert "server_cpu_us" not in op_stats([0.001], 1, cpu_s=None)
    assert op_stats([], 0, cpu_s=None) == {"calls": 0.0}


def test_growth_divides_the_deepest_figure_by_the_shallowest() -> None:
    rows: list[dict[str, Any]] = [
        {"depth": 1_000_000, "x": 3.0},
        {"depth": 1000, "x": 2.0},
        {"depth": 10, "x": None},
    ]
    assert growth(rows, lambda r: r["x"]) == pytest.approx(1.5)
    assert growth(rows[:1], lambda r: r["x"]) is None
    assert growth([{"depth": 1, "x": 0.0}, {"depth": 2, "x": 1.0}], lambda r: r["x"]) is None


def test_scaling_markdown_renders_depth_rows_growth_and_throughput() -> None:
    def row(depth: int, enqueue_ms: float) -> dict[str, object]:
        return {
            "depth": depth,
            "grpc": {"enqueue": {"p50_ms": enqueue_ms, "server_cpu_us": 900.0}},
            "server_rss_mb": 100.0,
            "redis_bytes_per_job": 120.0,
        }

    data = {
        "meta": {"date": "today"},
        "depth": [row(1000, 2.0), row(1_000_000, 3.0)],
        "throughput": [{"replicas": 1, "workers": 2, "drain_per_s": 1234.0}],
        "concurrent_enqueue": [{"replicas": 2, "producers": 4, "enqueue_per_s": 800.0}],
        "errors": ["queue depth: RuntimeError: boom"],
    }
    md = render_scaling(data)
    assert "| 1,000,000 | 3.00 | 900 |" in md
    assert "| **deepest / shallowest** | 1.50x | 1.00x |" in md
    assert "| 1 | 2 | 1,234 |" in md
    assert "| 2 | 4 producers, single Enqueue calls | 800 |" in md
    assert "- queue depth: RuntimeError: boom" in md


def test_the_cpu_table_has_a_row_per_system_that_recorded_cpu_with_its_parts_and_sum() -> None:
    huey = peer("huey", drain_per_s=1000)
    huey.details["drain_cpu_us_per_job"] = {"workers": 300.4, "redis": 40.2}
    disp = ours("disp", drain_per_s=900)
    disp.details["drain_cpu_us_per_job"] = {
        "workers": 500, "redis": 50, "server": 1200, "postgresql": 200,
    }  # fmt: skip
    echo = SystemResult("grpc-echo", "reference")

    lines = render_cpu_table(build_report([huey, disp, echo], {}))

    assert lines[0] == "| System | Workers | Redis | Server | PostgreSQL | All |"
    assert lines[2:] == [
        "| huey | 300 | 40 | — | — | 341 |",
        "| **disp** | 500 | 50 | 1,200 | 200 | 1,950 |",
    ]
    assert "CPU per drained job" in render_markdown(build_report([huey, disp, echo], {}))


def test_without_cpu_figures_there_is_no_cpu_table() -> None:
    md = render_markdown(build_report(SYSTEMS_FIXTURE, {}))
    assert "CPU per drained job" not in md


# -- rounds ------------------------------------------------------------------------


def _round(huey_drain: float, disp_drain: float, disp_cpu: float) -> list[SystemResult]:
    huey = peer("huey", drain_per_s=huey_drain, enqueue_single_per_s=5000)
    disp = ours("disp", drain_per_s=disp_drain)
    disp.details["drain_cpu_us_per_job"] = {"workers": disp_cpu, "server": 100.0}
    return [huey, disp]


def test_combined_rounds_take_each_figures_median_and_keep_every_round() -> None:
    rounds = [_round(3000, 2700, 400), _round(2000, 2400, 500)[::-1], _round(4000, 4400, 300)]

    combined = combine_rounds(rounds)

    assert [s.name for s in combined] == ["huey", "disp"]  # the first round's order
    huey, disp = combined
    assert huey.metrics == {"enqueue_single_per_s": 5000, "drain_per_s": 3000}
    assert disp.metrics == {"drain_per_s": 2700}
    assert disp.details["drain_cpu_us_per_job"] == {"server": 100.0, "workers": 400}
    assert [r["metrics"]["drain_per_s"] for r in disp.details["rounds"]] == [2700, 2400, 4400]


def test_a_system_failed_in_one_round_keeps_the_others_figures_and_is_not_failed() -> None:
    broken = SystemResult("disp", "ours", error="timeout", missing={"drain_per_s": "timeout"})
    rounds = [_round(3000, 2700, 400), [peer("huey", drain_per_s=2000), broken]]

    disp = combine_rounds(rounds)[1]

    assert disp.error is None and disp.metrics == {"drain_per_s": 2700}
    assert [r["error"] for r in disp.details["rounds"]] == [None, "timeout"]
    assert combine_rounds([[broken], [broken]])[0].error == "timeout"


def test_each_rounds_ratio_is_against_the_best_peer_of_that_round() -> None:
    rounds = [_round(3000, 2700, 400), _round(2000, 2400, 500), _round(4000, 4400, 300)]

    report = build_report(combine_rounds(rounds), {"rounds": 3}, rounds)

    assert report.round_ratios["disp"]["drain_per_s"] == pytest.approx([0.9, 1.2, 1.1])
    assert report.ratios["disp"]["drain_per_s"] == pytest.approx(2700 / 3000)  # of the medians
    md = render_markdown(report)
    assert "Figures above are medians of 3 rounds" in md
    assert "| **disp** | 0.90 / 1.20 / 1.10 (median 1.10x) |" in md.splitlines()
    assert json.loads(json.dumps(report_json(report)))["round_ratios"]["disp"]["drain_per_s"]


def test_one_round_reports_no_per_round_ratios() -> None:
    rounds = [_round(3000, 2700, 400)]
    report = build_report(rounds[0], {}, rounds)
    assert report.round_ratios == {}
    assert "medians of" not in render_markdown(report)


def test_the_echos_round_trip_fills_its_latency_cells_but_is_never_the_best_peer() -> None:
    floor = echo(2000)
    floor.metrics |= {"latency_p50_ms": 0.2, "latency_p99_ms": 0.4}
    report = build_report([*SYSTEMS_FIXTURE[:3], floor], {})

    assert report.best["latency_p50_ms"] is not None
    assert report.best["latency_p50_ms"].name == "huey"
    md = render_markdown(report)
    echo_row = next(line for line in md.splitlines() if line.startswith("| **grpc-echo**"))
    assert "| 0.2 | 0.4 |" in echo_row
    assert "the floor under an enqueue-to-start" in md


def test_without_the_echos_round_trip_there_is_no_floor_note() -> None:
    assert "the floor under" not in render_markdown(build_report(SYSTEMS_FIXTURE, {}))
